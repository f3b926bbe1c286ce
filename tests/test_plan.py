"""`datarater plan`: ahead-of-time compilation on 8 emulated devices, per-device memory and FLOPs."""

from __future__ import annotations

import numpy as np
import pytest

from datarater.cli import SUBCOMMANDS, compose
from datarater.config import MeshConfig, MetaConfig, ModelConfig
from datarater.config.plan import PAPER_PROTOCOL, PlanConfig, PlanProgram, lm_batch_shape
from datarater.models.flops import lm_param_counts, lm_train_flops_per_token
from datarater.programs.plan import format_table, per_device_bytes, plan

# Parameters and Adam moments dominate its memory (as for the 400M/1B presets on few devices).
TINY = ModelConfig(name="tiny", vocab_size=512, d_model=128, n_layers=2, n_heads=4, d_head=32, d_ff=512)
RATER = ModelConfig(name="tiny_rater", vocab_size=512, d_model=32, n_layers=1, n_heads=2, d_head=16, d_ff=64)
BATCH, SEQ = 16, 32


def program(mesh: MeshConfig, meta: bool) -> PlanProgram:
    return PlanProgram(model=TINY, rater=RATER, mesh=mesh,
                       meta=MetaConfig(population=8, unroll=2, inner_batch_size=4, outer_batch_size=4),
                       plan=PlanConfig(devices=[8], meta=meta, batch_size=BATCH, seq_len=SEQ))


@pytest.fixture(scope="module")
def rows() -> dict:
    data = plan(program(MeshConfig(data=-1, fsdp=1), meta=True))
    fsdp = plan(program(MeshConfig(data=1, fsdp=-1), meta=False))
    return {"data": {r["step"]: r for r in data}, "fsdp": {r["step"]: r for r in fsdp}}


def test_parameter_and_optimiser_bytes_follow_the_sharding(rows):
    total = lm_param_counts(TINY).total * 4  # float32
    data, fsdp = rows["data"]["lm"], rows["fsdp"]["lm"]
    assert data["devices"] == fsdp["devices"] == 8 and data["mesh"]["data"] == 8 and fsdp["mesh"]["fsdp"] == 8
    assert data["param_bytes"] == total  # pure data parallelism: every device holds the whole model
    assert fsdp["param_bytes"] == total // 8  # FSDP: every matrix and norm scale split 8 ways
    for r in (data, fsdp):  # Adam: two moments per parameter, plus a few scalar counters
        assert 2 * r["param_bytes"] <= r["opt_bytes"] <= 2 * r["param_bytes"] + 64
    assert fsdp["batch_bytes"] == data["batch_bytes"] == 3 * BATCH * SEQ * 4 // 8


def test_fsdp_needs_less_memory_per_device_than_data_parallel(rows):
    data, fsdp = rows["data"]["lm"], rows["fsdp"]["lm"]
    assert fsdp["argument_bytes"] < data["argument_bytes"] / 4  # compiler's own figure agrees
    assert fsdp["peak_bytes"] < data["peak_bytes"]


@pytest.mark.parametrize("mesh", ["data", "fsdp"])
def test_compiled_flops_match_the_formula(rows, mesh):
    r = rows[mesh]["lm"]
    assert r["flops_formula"] == pytest.approx(lm_train_flops_per_token(TINY, SEQ) * BATCH * SEQ / 8)
    assert 0.85 < r["flops_compiled"] / r["flops_formula"] < 1.15


def test_meta_step_is_planned_with_the_population_split(rows):
    r = rows["data"]["meta"]
    assert r["population"] == 8 and r["members_per_device"] == 1
    lm = lm_param_counts(TINY).total * 4
    # one member's parameters per device plus the (replicated) rater
    assert lm < r["param_bytes"] < lm + 4 * lm_param_counts(RATER).total * 4 + 1024
    assert r["temp_bytes"] > 0 and np.isfinite(r["flops_compiled"])
    assert 0.85 < r["flops_compiled"] / r["flops_formula"] < 1.2  # the counting model of meta_step_flops


def test_table_names_every_row(rows):
    prog = program(MeshConfig(data=-1), meta=True)
    text = format_table(prog, list(rows["data"].values()))
    lines = text.splitlines()
    assert any(ln.startswith("lm ") and " 8/1/1 " in ln for ln in lines)
    assert any(ln.startswith("meta ") for ln in lines)


def test_per_device_bytes_of_an_unsharded_tree():
    import jax

    tree = {"a": jax.ShapeDtypeStruct((3, 5), np.float32), "b": jax.ShapeDtypeStruct((7,), np.int32)}
    assert per_device_bytes(tree) == (15 + 7) * 4


def test_protocol_batch_shape_defaults():
    prog = PlanProgram(model=ModelConfig(name="chinchilla_1b"))
    assert lm_batch_shape(prog) == (256, 2048)
    prog = PlanProgram(model=ModelConfig(name="nano"))
    assert lm_batch_shape(prog) == (prog.train.batch_size, prog.data.seq_len)


def test_plan_config_composes_with_an_experiment():
    from datarater.config.plan import validate_plan

    prog = compose_plan(["+experiment=chinchilla_1b", "plan.devices=[8,64]"])
    assert prog.model.name == "chinchilla_1b" and prog.model.remat and prog.mesh.fsdp == -1
    assert prog.plan.devices == [8, 64] and lm_batch_shape(prog) == (256, 2048)
    validate_plan(prog.plan)
    with pytest.raises(Exception, match="plan.devices"):
        validate_plan(PlanConfig(devices=[]))


def compose_plan(overrides: list[str]) -> PlanProgram:
    from datarater.cli import Subcommand
    from datarater.config import validate_mesh, validate_meta, validate_model

    sub = SUBCOMMANDS.get("plan") or Subcommand(
        "plan", PlanProgram, "datarater.programs.plan:run",
        (("model", validate_model), ("rater", validate_model), ("mesh", validate_mesh), ("meta", validate_meta)), "")
    return compose(sub, overrides)


@pytest.mark.parametrize("name", sorted(PAPER_PROTOCOL))
def test_experiment_presets_follow_the_paper_protocol(name):
    # docs/method.md, "Downstream LMs": size | steps | batch | seq | lr
    paper = {"chinchilla_50m": (5000, 128, 2048, 1e-3), "chinchilla_150m": (12000, 128, 2048, 1e-3),
             "chinchilla_400m": (30000, 128, 2048, 1e-3), "chinchilla_1b": (48000, 256, 2048, 2e-4)}[name]
    prog = compose(SUBCOMMANDS["train-lm"], [f"+experiment={name}", "corpus.paths=[x.jsonl]"])
    assert prog.model.name == name
    assert (prog.train.steps, prog.train.batch_size, prog.data.seq_len, prog.train.lr) == paper
    assert prog.model.dtype == "bfloat16" and prog.model.param_dtype == "float32"
    p = PAPER_PROTOCOL[name]
    assert (p.steps, p.batch_size, p.seq_len, p.lr) == paper


def test_meta_experiment_follows_the_paper():
    prog = compose(SUBCOMMANDS["meta-train"], ["+experiment=meta_rater_50m", "corpus.paths=[x.jsonl]"])
    assert prog.model.name == "chinchilla_400m" and prog.rater.name == "rater_50m"
    m = prog.meta
    assert (m.population, m.unroll, m.steps, m.inner_batch_size, m.outer_batch_size) == (8, 2, 8000, 128, 128)
    assert prog.data.seq_len == 2048 and m.outer_weight_decay == 0.1 and m.outer_warmup_steps == 100
    assert prog.mesh.data == 8 and prog.mesh.rules["population"] == "data"


@pytest.mark.parametrize("mode", ["autodiff", "remat", "mixed"])
def test_meta_flops_model_matches_xla_at_an_unroll_it_was_not_fitted_on(mode):
    import dataclasses

    import jax
    import jax.numpy as jnp
    from flax import nnx

    from datarater.meta.core import MetaProblem
    from datarater.models.rater import Rater
    from datarater.models.transformer import CausalLM
    from datarater.programs.plan import meta_step_flops
    from datarater.train.optimizer import make_optimizer

    t, b = 3, 4
    prog = program(MeshConfig(), meta=True)
    prog = dataclasses.replace(prog, meta=dataclasses.replace(prog.meta, population=1, unroll=t, grad_mode=mode,
                                                              inner_batch_size=b, outer_batch_size=b))
    tx = make_optimizer(prog.train, eps_root=1e-8)
    lm = nnx.eval_shape(lambda: CausalLM(TINY, rngs=nnx.Rngs(0)))
    rater = nnx.eval_shape(lambda: Rater(RATER, rngs=nnx.Rngs(0)))
    theta, eta = (nnx.to_pure_dict(nnx.state(m, nnx.Param)) for m in (lm, rater))
    rows = lambda *lead: {k: jax.ShapeDtypeStruct((*lead, b, SEQ), jnp.int32) for k in ("tokens", "segment_ids", "positions")}
    problem = MetaProblem(nnx.split(lm)[0], nnx.split(rater)[0], tx, mode, scan_unroll=True)
    compiled = jax.jit(problem.meta_grad).lower(eta, theta, jax.eval_shape(tx.init, theta), rows(t), rows()).compile()
    ratio = compiled.cost_analysis()["flops"] / meta_step_flops(prog, SEQ)
    assert 0.9 < ratio < 1.2, ratio


def test_plan_formula_counts_only_what_it_compiles():
    """The plan compiles the T inner steps unrolled and no plain inner steps (meta.plain_inner_steps),
    whatever meta.unrolled_max says: its formula is the unrolled meta-step's alone."""
    import dataclasses

    from datarater.models.flops import meta_step_flops as counted
    from datarater.programs.plan import meta_step_flops

    prog = program(MeshConfig(), meta=True)
    looped = dataclasses.replace(prog, meta=dataclasses.replace(prog.meta, unroll=4, unrolled_max=2, grad_mode="mixed",
                                                                plain_inner_steps=3, lifetime=20))
    unrolled = dataclasses.replace(looped.meta, unrolled_max=4, plain_inner_steps=0)
    assert meta_step_flops(looped, SEQ) == pytest.approx(counted(TINY, RATER, unrolled, SEQ), rel=1e-12)
    assert meta_step_flops(looped, SEQ) < counted(TINY, RATER, looped.meta, SEQ)


def test_a_member_batch_that_does_not_split_is_named_in_the_table():
    """8 x 128 rows on fsdp=256 (no data axis for the population): member batches do not split
    over 256 devices, so each device would compute whole batches; the plan says so, and does not
    when the population takes the data axis and leaves 32 devices per member."""
    from jax.sharding import AbstractMesh

    from datarater.parallel.population import member_batch_axes, replicated_batch_note

    rules = MeshConfig().rules
    flat, laid = AbstractMesh((1, 256, 1), ("data", "fsdp", "tensor")), AbstractMesh((8, 32, 1), ("data", "fsdp", "tensor"))
    assert member_batch_axes(flat, rules, 8, 128) == () and member_batch_axes(laid, rules, 8, 128) == ("fsdp",)
    note = replicated_batch_note(flat, rules, 8, 128)
    assert "128 rows" in note and "256 devices" in note and "fsdp=256" in note
    assert replicated_batch_note(laid, rules, 8, 128) == ""
    assert replicated_batch_note(AbstractMesh((8, 1, 1), ("data", "fsdp", "tensor")), rules, 8, 128) == ""  # nothing left
    row = {"step": "meta", "devices": 256, "mesh": {"data": 1, "fsdp": 256, "tensor": 1}, "param_bytes": 1, "opt_bytes": 1,
           "batch_bytes": 1, "temp_bytes": 1, "peak_bytes": 2, "flops_compiled": 1.0, "flops_formula": 1.0,
           "compile_s": 1.0, "notes": [note]}
    assert f"  meta on 256 devices: {note}" in format_table(program(MeshConfig(), meta=True), [row]).splitlines()
