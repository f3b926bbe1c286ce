"""Model shapes, masking, rotary positions and the preset parameter counts."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from datarater.config import ModelConfig
from datarater.config.presets import load_preset
from datarater.models.flops import lm_param_counts, lm_train_flops_per_token
from datarater.models.layers import Attention, attention_mask, rotary
from datarater.models.transformer import CausalLM, Trunk, next_token_targets, sequence_losses

TINY = ModelConfig(name="tiny", vocab_size=64, d_model=32, n_layers=2, n_heads=2, d_head=16, d_ff=64)


def batch_of(tokens, segment_ids):
    tokens = jnp.asarray(tokens, jnp.int32)
    seg = jnp.asarray(segment_ids, jnp.int32)
    # position within each segment
    pos = np.zeros(seg.shape, np.int32)
    for b in range(seg.shape[0]):
        for t in range(1, seg.shape[1]):
            pos[b, t] = pos[b, t - 1] + 1 if seg[b, t] == seg[b, t - 1] else 0
    return {"tokens": tokens, "segment_ids": seg, "positions": jnp.asarray(pos)}


@pytest.fixture(scope="module")
def lm():
    return CausalLM(TINY, rngs=nnx.Rngs(0))


def test_logits_shape_and_finite(lm):
    b = batch_of(np.arange(2 * 12).reshape(2, 12) % 64, np.ones((2, 12)))
    logits = lm(b["tokens"], b["segment_ids"], b["positions"])
    assert logits.shape == (2, 12, TINY.vocab_size)
    assert logits.dtype == jnp.float32
    assert np.isfinite(np.asarray(logits)).all()


def test_future_token_cannot_change_earlier_logits(lm):
    rng = np.random.default_rng(0)
    toks = rng.integers(0, 64, (1, 16))
    seg = np.ones((1, 16))
    a = lm(*batch_of(toks, seg).values())
    toks2 = toks.copy()
    toks2[0, 10] = (toks2[0, 10] + 7) % 64
    b = lm(*batch_of(toks2, seg).values())
    np.testing.assert_allclose(a[0, :10], b[0, :10], atol=1e-6)
    assert np.abs(np.asarray(a[0, 10:] - b[0, 10:])).max() > 1e-4  # and it does change later ones


@pytest.mark.parametrize(("blocks", "chunk"), [(2, 0), pytest.param(3, 0, marks=pytest.mark.slow), pytest.param(13, 0, marks=pytest.mark.slow), (1, 4), (3, 2)])
def test_blocked_and_chunked_causal_attention_equal_one_full_product(blocks, chunk):
    """Query blocks that skip the masked upper triangle, and query chunks run in a loop (13
    positions: 4 chunks of 4, the last padded), give the full product's logits and gradients.

    Padding positions (segment 0) attend to nothing and their logits are never used; they are left out.
    """
    full = CausalLM(dataclasses.replace(TINY, causal_blocks=1), rngs=nnx.Rngs(3))
    blocked = CausalLM(dataclasses.replace(TINY, causal_blocks=blocks, attention_chunk=chunk), rngs=nnx.Rngs(3))
    rng = np.random.default_rng(3)
    b = batch_of(rng.integers(0, 64, (2, 13)), np.array([[1] * 5 + [2] * 6 + [0] * 2, [1] * 13]))
    _assert_same_outputs_and_gradients(full, blocked, b)


def test_chunked_non_causal_attention_equals_one_full_product():
    full = Trunk(TINY, causal=False, rngs=nnx.Rngs(4))
    chunked = Trunk(dataclasses.replace(TINY, attention_chunk=5), causal=False, rngs=nnx.Rngs(4))
    rng = np.random.default_rng(4)
    b = batch_of(rng.integers(0, 64, (2, 13)), np.array([[1] * 5 + [2] * 6 + [0] * 2, [1] * 13]))
    _assert_same_outputs_and_gradients(full, chunked, b)


def test_chunked_attention_in_bfloat16_stays_bfloat16_and_matches_the_full_product():
    """bf16 compute (the paper presets): chunks, padding and the float32 softmax inside each chunk
    give the full product's logits to bf16 rounding, and gradients reach float32 parameters."""
    cfg = dataclasses.replace(TINY, dtype="bfloat16", param_dtype="float32")
    full, chunked = Trunk(cfg, causal=True, rngs=nnx.Rngs(5)), Trunk(dataclasses.replace(cfg, attention_chunk=4), causal=True, rngs=nnx.Rngs(5))
    rng = np.random.default_rng(5)
    b = batch_of(rng.integers(0, 64, (2, 13)), np.array([[1] * 5 + [2] * 6 + [0] * 2, [1] * 13]))
    real = np.asarray(b["segment_ids"]) != 0
    a, c = full(*b.values()), chunked(*b.values())
    assert a.dtype == c.dtype == jnp.bfloat16
    a32, c32 = np.asarray(a, np.float32)[real], np.asarray(c, np.float32)[real]
    assert np.abs(c32 - a32).max() <= 2e-2 * np.abs(a32).max()

    def grads(model):
        graphdef, params = nnx.split(model, nnx.Param)
        f = lambda p: jnp.sum(jnp.sin(nnx.merge(graphdef, p)(*b.values()).astype(jnp.float32)) * real[..., None])
        return jax.grad(f)(params)

    ga, gc = jax.tree.leaves(grads(full)), jax.tree.leaves(grads(chunked))
    for x, y in zip(ga, gc, strict=True):
        assert y.dtype == jnp.float32
        assert float(jnp.abs(y - x).max()) <= 5e-2 * float(jnp.abs(x).max()) + 1e-6
    assert max(float(jnp.abs(x).max()) for x in ga) > 1e-3


def _assert_same_outputs_and_gradients(full, other, b):
    real = np.asarray(b["segment_ids"]) != 0

    def loss_and_grad(model):
        graphdef, params = nnx.split(model, nnx.Param)
        f = lambda p: jnp.sum(jnp.sin(nnx.merge(graphdef, p)(*b.values())) * real[..., None])
        return jax.value_and_grad(f)(params)

    (la, ga), (lb, gb) = loss_and_grad(full), loss_and_grad(other)
    np.testing.assert_allclose(np.asarray(full(*b.values()))[real], np.asarray(other(*b.values()))[real], atol=2e-6)
    np.testing.assert_allclose(float(la), float(lb), rtol=1e-5)
    assert float(la) != 0.0
    for x, y in zip(jax.tree.leaves(ga), jax.tree.leaves(gb), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=2e-5)


@pytest.mark.parametrize("causal", [True, False])
def test_packed_segments_do_not_leak(causal):
    trunk = Trunk(TINY, causal=causal, rngs=nnx.Rngs(1))
    rng = np.random.default_rng(1)
    toks = rng.integers(0, 64, (1, 16))
    seg = np.array([[1] * 6 + [2] * 6 + [0] * 4])
    a = trunk(*batch_of(toks, seg).values())
    toks2 = toks.copy()
    toks2[0, :6] = rng.integers(0, 64, 6)  # change document 1 entirely
    b = trunk(*batch_of(toks2, seg).values())
    np.testing.assert_allclose(a[0, 6:12], b[0, 6:12], atol=1e-6)  # document 2 unaffected
    assert np.abs(np.asarray(a[0, :6] - b[0, :6])).max() > 1e-4


def test_non_causal_trunk_sees_the_future():
    trunk = Trunk(TINY, causal=False, rngs=nnx.Rngs(2))
    toks = np.arange(12)[None] % 64
    seg = np.ones((1, 12))
    a = trunk(*batch_of(toks, seg).values())
    toks2 = toks.copy()
    toks2[0, -1] = 5
    b = trunk(*batch_of(toks2, seg).values())
    assert np.abs(np.asarray(a[0, 0] - b[0, 0])).max() > 1e-5


def test_same_document_same_output_wherever_it_is_packed(lm):
    """Rotary positions restart per segment: a document's logits do not depend on its offset."""
    rng = np.random.default_rng(3)
    doc = rng.integers(3, 64, 5)
    alone = batch_of(np.r_[doc, np.zeros(7, int)][None], np.r_[[1] * 5, [0] * 7][None])
    other = rng.integers(3, 64, 7)
    packed = batch_of(np.r_[other, doc][None], np.r_[[1] * 7, [2] * 5][None])
    a = lm(*alone.values())[0, :5]
    b = lm(*packed.values())[0, 7:]
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_rotary_turns_each_half_pair_by_its_angle():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 3, 2, 8)).astype(np.float32)
    pos = np.array([[0, 1, 7], [3, 2, 40]])
    out = np.asarray(rotary(jnp.asarray(x), jnp.asarray(pos), 100.0))
    for b, t, h, i in np.ndindex(2, 3, 2, 4):
        a = pos[b, t] * 100.0 ** (-i / 4)
        x1, x2 = x[b, t, h, i], x[b, t, h, i + 4]
        np.testing.assert_allclose(out[b, t, h, [i, i + 4]], [x1 * np.cos(a) - x2 * np.sin(a),
                                                             x1 * np.sin(a) + x2 * np.cos(a)], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("causal", [True, False])
def test_attention_follows_its_definition_head_by_head(causal):
    """q, k, v are x times the fused weight's slices 0, 1, 2 (q and k rotated), each head attends
    within its segment (and the past when causal), and the heads are mixed by wo."""
    cfg = dataclasses.replace(TINY, n_heads=3, d_head=8, causal_blocks=2)
    attn = Attention(cfg, causal, nnx.Rngs(3))
    rng = np.random.default_rng(6)
    x = rng.normal(size=(2, 10, cfg.d_model)).astype(np.float32)
    seg = np.array([[1] * 6 + [2] * 4, [1] * 9 + [0]])
    b = batch_of(np.zeros((2, 10)), seg)
    out = np.asarray(attn(jnp.asarray(x), attention_mask(b["segment_ids"], causal), b["positions"]))
    w, wo, pos = np.asarray(attn.wqkv[...]), np.asarray(attn.wo[...]), b["positions"]
    want = np.zeros_like(out)
    for i in range(2):
        for h in range(3):
            q, k = (np.asarray(rotary(jnp.asarray(x[i] @ w[:, c, h])[None, :, None], pos[i:i + 1], cfg.rope_base))[0, :, 0]
                    for c in (0, 1))
            v = x[i] @ w[:, 2, h]
            for t in range(10):
                see = [s for s in range(10) if seg[i, s] == seg[i, t] != 0 and (s <= t or not causal)]
                if not see:
                    continue  # padding attends to nothing: its output is not defined here
                z = np.array([q[t] @ k[s] for s in see]) / np.sqrt(cfg.d_head)
                p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
                want[i, t] += (p @ v[see]) @ wo[h]
    real = seg != 0
    np.testing.assert_allclose(out[real], want[real], rtol=1e-4, atol=1e-5)


def test_rotary_scores_depend_on_relative_position_only():
    rng = np.random.default_rng(4)
    q = jnp.asarray(rng.normal(size=(1, 1, 1, 16)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(1, 1, 1, 16)), jnp.float32)

    def score(pq, pk):
        return float(jnp.sum(rotary(q, jnp.array([[pq]]), 10000.0) * rotary(k, jnp.array([[pk]]), 10000.0)))

    assert score(5, 2) == pytest.approx(score(13, 10), rel=1e-4)
    assert score(5, 2) != pytest.approx(score(5, 4), rel=1e-3)


def test_sequence_losses_count_only_within_segment_targets(lm):
    seg = np.array([[1, 1, 1, 2, 2, 0, 0, 0]])
    b = batch_of(np.arange(8)[None] + 3, seg)
    _, mask = next_token_targets(b["tokens"], b["segment_ids"])
    # predictions 0->1, 1->2 (doc 1), 3->4 (doc 2); not 2->3 (crosses documents) nor into padding
    np.testing.assert_array_equal(np.asarray(mask[0]), [1, 1, 0, 1, 0, 0, 0])
    nll, count = sequence_losses(lm, b)
    assert float(count[0]) == 3
    logp = jax.nn.log_softmax(lm(*b.values())[0], -1)
    expected = -(logp[0, 4] + logp[1, 5] + logp[3, 7])
    assert float(nll[0]) == pytest.approx(float(expected), rel=1e-5)


NOMINAL = {"chinchilla_50m": 50e6, "chinchilla_150m": 150e6, "chinchilla_400m": 400e6, "chinchilla_1b": 1e9}


@pytest.mark.parametrize("name", sorted(NOMINAL))
def test_paper_presets_within_ten_percent_of_nominal(name):
    counts = lm_param_counts(load_preset(name))
    assert abs(counts.non_embedding / NOMINAL[name] - 1) < 0.10


def test_param_count_matches_a_hand_count():
    c = lm_param_counts(TINY)
    d, f, h, k, v, n = 32, 64, 2, 16, 64, 2
    per_layer = d * 3 * h * k + h * k * d + 2 * d * f + 2 * d
    assert c.total == v * d + n * per_layer + d + d * v
    assert c.embedding == v * d and c.head == d * v
    assert c.dense == n * (d * 3 * h * k + h * k * d + 2 * d * f) + d * v
    # 6 x dense + causal attention: 3 passes x (2 products x 2 FLOPs x L x H x dh x T) / 2
    assert lm_train_flops_per_token(TINY, 10) == 6 * c.dense + 3 * (2 * 2 * n * h * k * 10) / 2
