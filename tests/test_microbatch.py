"""Microbatching (train.microbatch_rows): strided slices of the batch, and an LM step that equals the
whole batch's step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from datarater.config import ModelConfig, TrainConfig
from datarater.errors import UserError
from datarater.models.transformer import CausalLM, sequence_losses
from datarater.train.microbatch import map_microbatches, merge, microbatch_count, split
from datarater.train.optimizer import make_optimizer
from datarater.train.step import make_eval_step, make_train_step

TINY = ModelConfig(name="t", vocab_size=32, d_model=16, n_layers=1, n_heads=2, d_head=8, d_ff=32)


def test_microbatches_are_strided_rows_and_merge_back():
    x = np.arange(12 * 3).reshape(12, 3)
    parts = np.asarray(split(x, 4))
    for m in range(4):
        np.testing.assert_array_equal(parts[m], x[m::4])  # contiguous device blocks hold every microbatch
    np.testing.assert_array_equal(np.asarray(merge(parts)), x)


def test_map_microbatches_sums_totals_and_keeps_row_order():
    x = jnp.arange(8.0)
    total, rows = map_microbatches(lambda part: (jnp.sum(part), 10 * part), x, 4)
    assert float(total) == 28.0
    np.testing.assert_array_equal(np.asarray(rows), 10 * np.arange(8.0))


def test_microbatched_lm_step_is_the_whole_batch_step():
    """The mean over the batch's tokens, not the mean of microbatch means: rows hold very
    different token counts here, so averaging per microbatch would give another update."""
    rng = np.random.default_rng(0)
    b, t = 8, 32
    lengths = np.array([32, 2, 32, 5, 32, 9, 32, 0])  # 4 microbatches of 62, 9, 62 and 4 targets
    seg = (np.arange(t) < lengths[:, None]).astype(np.int32)
    batch = {"tokens": jnp.asarray(rng.integers(0, 32, (b, t)), jnp.int32), "segment_ids": jnp.asarray(seg),
             "positions": jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))}
    model = CausalLM(TINY, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)[0], nnx.to_pure_dict(nnx.state(model, nnx.Param))
    tx = make_optimizer(TrainConfig(steps=10, warmup_steps=0, lr=1e-2))
    out = {n: jax.jit(make_train_step(graphdef, tx, n))(params, tx.init(params), batch) for n in (1, 4)}
    (p1, _, m1), (p4, _, m4) = out[1], out[4]
    assert float(m1["tokens"]) == float(m4["tokens"]) == float(np.sum(np.maximum(lengths - 1, 0)))
    np.testing.assert_allclose(float(m4["loss"]), float(m1["loss"]), rtol=1e-6)
    np.testing.assert_allclose(float(m4["grad_norm"]), float(m1["grad_norm"]), rtol=1e-5)
    moved = float(optax.global_norm(jax.tree.map(jnp.subtract, p1, params)))
    assert moved > 1e-3
    assert float(optax.global_norm(jax.tree.map(jnp.subtract, p4, p1))) <= 1e-4 * moved
    # the eval step in 4 microbatches: the batch's summed NLL and target count, by definition
    losses, counts = sequence_losses(model, batch)
    for n in (1, 4):
        nll, count = jax.jit(make_eval_step(graphdef, n))(params, batch)
        assert float(count) == float(jnp.sum(counts)) == float(m1["tokens"])
        np.testing.assert_allclose(float(nll), float(jnp.sum(losses)), rtol=1e-6)


def test_microbatch_count_from_rows_per_device():
    assert microbatch_count("k", 128, 4, 0) == 1  # 0: the whole batch
    assert microbatch_count("k", 128, 4, 8) == 4  # 32 rows per device, 8 at a time
    assert microbatch_count("k", 128, 4, 1) == 32
    assert microbatch_count("k", 256, 256, 1) == 1  # as many rows as the device holds: no loop
    assert microbatch_count("k", 128, 128, 4) == 1  # more than it holds: the same preset on a larger slice
    with pytest.raises(UserError, match="config key 'k': 3 rows per microbatch do not divide the 32 rows"):
        microbatch_count("k", 128, 4, 3)
