"""Compute accounting: the FLOPs formulas against matmuls counted by hand for a tiny model."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from datarater.config import MetaConfig, ModelConfig
from datarater.eval.flops import (
    lm_flops_per_step,
    meta_step_flops,
    meta_training_flops,
    oversampled_batch,
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


def test_rater_inference_flops_match_a_hand_count():
    seq = 7
    # non-causal: full attention; the head is a dot product of the pooled vector, once per sequence
    expected = forward_by_hand(RATER, seq, causal=False, lm_head=False) + 2 * RATER.d_model
    assert rater_inference_flops_per_sequence(RATER, seq) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("module", ["lm", "rater"])
def test_hand_count_agrees_with_xla_cost_analysis(module):
    """XLA computes the whole attention matrix (masked), so compare with the unhalved count."""
    cfg = ModelConfig(vocab_size=64, d_model=64, n_layers=2, n_heads=2, d_head=32, d_ff=256)
    seq = 32
    model = CausalLM(cfg, rngs=nnx.Rngs(0)) if module == "lm" else Rater(cfg, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    ones = jnp.ones((1, seq), jnp.int32)
    fwd = jax.jit(lambda p, t: nnx.merge(graphdef, p)(t, ones, jnp.arange(seq)[None]))
    cost = fwd.lower(params, ones).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    if not cost or "flops" not in cost:
        pytest.skip("this backend gives no cost analysis")
    hand = forward_by_hand(cfg, seq, causal=False, lm_head=module == "lm")
    # XLA also counts the element-wise work (norms, GELU, softmax, rotary): a few percent more
    assert hand <= cost["flops"] <= 1.06 * hand


def test_oversampled_batch():
    assert [oversampled_batch(32, r) for r in (0.0, 0.1, 0.25, 0.5, 0.75, 0.9)] == [32, 36, 43, 64, 128, 320]
    with pytest.raises(ValueError):
        oversampled_batch(32, 1.0)


def test_rater_flops_per_step_scores_the_oversampled_batch():
    per_seq = forward_by_hand(RATER, 6, causal=False, lm_head=False) + 2 * RATER.d_model
    assert rater_flops_per_step(RATER, 32, 6, 0.5) == pytest.approx(64 * per_seq)
    assert rater_flops_per_step(RATER, 32, 6, 0.0) == 0.0  # no filter, no rater


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
