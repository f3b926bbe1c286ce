"""`datarater.models.flops`: the FLOP formulas against matmuls counted by hand, the traced program and XLA."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import pytest
from flax import nnx
from jax.extend.core import jaxprs_in_params

from datarater.config import MetaConfig, ModelConfig
from datarater.curate.rules import oversampled_size
from datarater.models.flops import (
    lm_flops_per_step,
    meta_step_flops,
    meta_training_flops,
    rater_flops_per_step,
    rater_inference_flops_per_sequence,
)
from datarater.models.rater import Rater
from datarater.models.transformer import CausalLM

TINY = ModelConfig(name="tiny", vocab_size=24, d_model=8, n_layers=2, n_heads=2, d_head=4, d_ff=16)
RATER = ModelConfig(name="tiny-rater", vocab_size=24, d_model=12, n_layers=1, n_heads=3, d_head=2, d_ff=20)


def matmul(m: int, k: int, n: int) -> int:
    """FLOPs of [m, k] @ [k, n]: m*n dot products of length k, a multiply and an add each."""
    return 2 * m * k * n


def forward_by_hand(cfg: ModelConfig, seq: int, causal: bool, lm_head: bool) -> float:
    """Every matmul of one sequence's forward pass, written out (attention halved when causal)."""
    d, h, k, f = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_ff
    per_layer = (
        matmul(seq, d, 3 * h * k)  # x @ W_qkv
        + h * matmul(seq, k, seq) * (0.5 if causal else 1.0)  # Q K^T, per head
        + h * matmul(seq, seq, k) * (0.5 if causal else 1.0)  # probs V, per head
        + matmul(seq, h * k, d)  # out projection
        + matmul(seq, d, f)  # MLP in
        + matmul(seq, f, d)  # MLP out
    )
    total = cfg.n_layers * per_layer
    if lm_head:
        total += matmul(seq, d, cfg.vocab_size)  # logits
    return total


def test_lm_training_flops_per_step_match_a_hand_count():
    seq, batch = 6, 5
    # training = forward + backward (2 x forward) = 3 x forward, over the batch
    expected = 3 * batch * forward_by_hand(TINY, seq, causal=True, lm_head=True)
    assert lm_flops_per_step(TINY, batch, seq) == pytest.approx(expected, rel=1e-12)
    # the numbers: per layer qkv 2304 + QK^T 288 + AV 288 + out 768 + MLP 1536 + 1536; logits 2304
    assert forward_by_hand(TINY, seq, causal=True, lm_head=True) == 2 * (2304 + 288 + 288 + 768 + 1536 + 1536) + 2304


def xla_flops(fn, *args) -> float | None:
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return cost.get("flops") if cost else None


def jaxpr_matmul_flops(jaxpr) -> int:
    """FLOPs of every dot_general of a traced program (2 x output size x contracted size), sub-programs included."""
    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            (lhs_contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[i] for i in lhs_contract)
        for sub in jaxprs_in_params(eqn.params):
            total += jaxpr_matmul_flops(sub) * eqn.params.get("length", 1)
    return total


def test_lm_hand_count_agrees_with_xla_cost_analysis():
    """XLA computes the whole attention matrix (masked), so compare with the unhalved count."""
    cfg = ModelConfig(vocab_size=64, d_model=64, n_layers=2, n_heads=2, d_head=32, d_ff=256)
    seq = 32
    graphdef, params = nnx.split(CausalLM(cfg, rngs=nnx.Rngs(0)))
    ones = jnp.ones((1, seq), jnp.int32)
    flops = xla_flops(lambda p, t: nnx.merge(graphdef, p)(t, ones, jnp.arange(seq)[None]), params, ones)
    if flops is None:
        pytest.skip("this backend gives no cost analysis")
    hand = forward_by_hand(cfg, seq, causal=False, lm_head=True)
    # XLA also counts the element-wise work (norms, GELU, softmax, rotary): a few percent more
    assert hand <= flops <= 1.06 * hand


def test_rater_inference_flops_are_its_matmuls_with_the_head_once_per_sequence():
    """The one definition of the rater's forward FLOPs: 2 x trunk dense parameters per token, full
    (bidirectional) attention, and the scalar head once per sequence, a dot product of the pooled
    vector (2 x d_model), not a per-token projection. Checked three ways: written out by hand, as
    the dot_generals of the traced forward (exactly), and against XLA's cost analysis (which also
    counts a few percent of element-wise work: norms, GELU, softmax, rotary, the pooling)."""
    seq = 7
    expected = forward_by_hand(RATER, seq, causal=False, lm_head=False) + 2 * RATER.d_model
    assert rater_inference_flops_per_sequence(RATER, seq) == pytest.approx(expected, rel=1e-12)

    cfg = ModelConfig(vocab_size=64, d_model=64, n_layers=2, n_heads=2, d_head=32, d_ff=256)
    seq, rows = 32, 3
    graphdef, params = nnx.split(Rater(cfg, rngs=nnx.Rngs(0)))
    tokens = jnp.ones((rows, seq), jnp.int32)
    positions = jnp.tile(jnp.arange(seq)[None], (rows, 1))

    def forward(p, t):
        return nnx.merge(graphdef, p)(t, tokens, positions)

    formula = rows * rater_inference_flops_per_sequence(cfg, seq)
    # the head counted per token (2 (d_model + 1) FLOPs a token) would be 4032 FLOPs a row more
    assert jaxpr_matmul_flops(jax.make_jaxpr(forward)(params, tokens).jaxpr) == formula
    flops = xla_flops(forward, params, tokens)
    if flops is None:
        pytest.skip("this backend gives no cost analysis")
    assert formula <= flops <= 1.06 * formula


def test_rater_flops_per_step_scores_the_oversampled_batch():
    per_seq = forward_by_hand(RATER, 6, causal=False, lm_head=False) + 2 * RATER.d_model
    assert rater_flops_per_step(RATER, oversampled_size(32, 0.5), 6) == pytest.approx(64 * per_seq)
    assert rater_flops_per_step(RATER, 0, 6) == 0.0  # no filter, no rater


@pytest.mark.parametrize("grad_mode, unroll, plain, first_saves, lm_recomputed, rater_recomputed", [
    ("autodiff", 3, 0, True, 0, False),  # a loop (meta.unrolled_max = 2) with the first step outside it
    ("remat", 3, 0, False, 3, True),  # every step in a checkpointed loop, the rater a checkpointed map
    ("remat", 2, 0, True, 2, False),  # unrolled: every step recomputed, but the first is not in a loop
    ("mixed", 2, 0, True, 0, False),  # unrolled: keeps each step's linearisation, no recomputation
    ("mixed", 4, 0, True, 2, True),  # a loop: the steps inside it (all but the first and last) recompute
    ("mixed", 2, 3, True, 0, False),  # 3 plain rater-weighted steps before the unroll, not differentiated
])
def test_meta_step_flops_follow_the_documented_estimate(grad_mode, unroll, plain, first_saves, lm_recomputed,
                                                        rater_recomputed):
    seq = 6
    meta = MetaConfig(unroll=unroll, population=2, inner_batch_size=4, outer_batch_size=5, grad_mode=grad_mode,
                      steps=10, unrolled_max=2, plain_inner_steps=plain, lifetime=20)
    f = 4 * forward_by_hand(TINY, seq, causal=True, lm_head=True)  # the LM's forward on an inner batch
    r = 4 * (forward_by_hand(RATER, seq, causal=False, lm_head=False) + 2 * RATER.d_model)
    f_out = 5 * forward_by_hand(TINY, seq, causal=True, lm_head=True)
    # one inner step: rater forward + LM forward and backward (3 x forward) on the inner batch; the
    # unroll's forward and its backward (2x), less 4F where the first step's theta needs no
    # cotangent, plus what is recomputed; the held-out loss: forward and backward (3x)
    step = r + 3 * f
    per_member = (plain * step + 3 * unroll * step - (4 * f if first_saves else 0)
                  + lm_recomputed * 3 * f + (unroll * r if rater_recomputed else 0) + 3 * f_out)
    assert meta_step_flops(TINY, RATER, meta, seq) == pytest.approx(2 * per_member, rel=1e-12)
    assert meta_training_flops(TINY, RATER, meta, seq) == pytest.approx(20 * per_member, rel=1e-12)


@pytest.mark.parametrize("grad_mode, lm_recomputed", [("autodiff", 0), ("remat", 1), ("mixed", 1)])
def test_one_inner_step_in_a_loop_is_differentiated_whole(grad_mode, lm_recomputed):
    """T = 1 with meta.unrolled_max = 0: a scan of one step, so its theta's cotangent is computed
    (no 4F saving); mixed keeps no linearisation in a loop and recomputes it; the rater runs once."""
    seq = 6
    meta = MetaConfig(unroll=1, population=1, inner_batch_size=4, outer_batch_size=4, grad_mode=grad_mode,
                      unrolled_max=0)
    f = 4 * forward_by_hand(TINY, seq, causal=True, lm_head=True)
    r = 4 * (forward_by_hand(RATER, seq, causal=False, lm_head=False) + 2 * RATER.d_model)
    expected = 3 * (r + 3 * f) + lm_recomputed * 3 * f + 3 * f
    assert meta_step_flops(TINY, RATER, meta, seq) == pytest.approx(expected, rel=1e-12)
