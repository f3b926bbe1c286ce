"""The meta-gradient: three grad modes agree, and match central finite differences."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from datarater.config import ModelConfig, TrainConfig
from datarater.meta.core import (
    MetaProblem,
    make_population_meta_step,
    outer_optimizer,
    outer_update,
    softmax_weights,
    valid_rows,
)
from datarater.models.rater import Rater
from datarater.models.transformer import CausalLM
from datarater.train.optimizer import make_optimizer

TINY = ModelConfig(name="t", vocab_size=16, d_model=16, n_layers=1, n_heads=2, d_head=8, d_ff=32)


def batch(rng, shape) -> dict:
    return {
        "tokens": jnp.asarray(rng.integers(3, 16, shape), jnp.int32),
        "segment_ids": jnp.ones(shape, jnp.int32),
        "positions": jnp.broadcast_to(jnp.arange(shape[-1]), shape).astype(jnp.int32),
    }


@pytest.fixture(scope="module")
def setup():
    lm, rater = CausalLM(TINY, rngs=nnx.Rngs(0)), Rater(TINY, rngs=nnx.Rngs(1))
    theta = nnx.to_pure_dict(nnx.state(lm, nnx.Param))
    eta = nnx.to_pure_dict(nnx.state(rater, nnx.Param))
    # Adam inner updates with a large rate so the outer loss depends strongly on the weights.
    tx = make_optimizer(TrainConfig(lr=0.05, warmup_steps=0, steps=100, weight_decay=0.0), eps_root=1e-8)
    return nnx.split(lm)[0], nnx.split(rater)[0], theta, eta, tx


def problem(setup, mode, scan_unroll=False):
    lm_g, rater_g, _, _, tx = setup
    return MetaProblem(lm_g, rater_g, tx, mode, scan_unroll=scan_unroll)


def tree_dot(a, b) -> float:
    return float(sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)))


def unit_direction(tree, seed: int):
    """A random direction of unit global norm in the space of ``tree``."""
    rng = np.random.default_rng(100 + seed)
    v = [jnp.asarray(rng.normal(size=x.shape), jnp.float32) for x in jax.tree.leaves(tree)]
    norm = float(optax.global_norm(v))
    return jax.tree.unflatten(jax.tree.structure(tree), [x / norm for x in v])


@pytest.mark.parametrize("unroll", [1, pytest.param(2, marks=pytest.mark.slow), pytest.param(3, marks=pytest.mark.slow)])
def test_grad_modes_agree_and_match_finite_differences(setup, unroll):
    _, _, theta, eta, tx = setup
    rng = np.random.default_rng(unroll)
    inner, held = batch(rng, (unroll, 4, 8)), batch(rng, (4, 8))
    opt = tx.init(theta)
    grads = {}
    for mode in ("autodiff", "remat", "mixed"):
        (loss, _), grads[mode] = jax.jit(problem(setup, mode).meta_grad)(eta, theta, opt, inner, held)
    scale = float(optax.global_norm(grads["autodiff"]))
    assert scale > 1e-4  # the rater does influence the outer loss
    for mode in ("remat", "mixed"):
        diff = optax.global_norm(jax.tree.map(jnp.subtract, grads[mode], grads["autodiff"]))
        assert float(diff) <= 1e-4 * scale, mode
    # The unrolled program (meta.scan_unroll) computes the same meta-gradient as the scan loop.
    for mode in ("autodiff", "mixed"):
        _, unrolled = jax.jit(problem(setup, mode, scan_unroll=True).meta_grad)(eta, theta, opt, inner, held)
        diff = optax.global_norm(jax.tree.map(jnp.subtract, unrolled, grads[mode]))
        assert float(diff) <= 1e-5 * scale, mode

    outer = jax.jit(lambda e: problem(setup, "autodiff").outer_loss(e, theta, opt, inner, held)[0])
    eps = 1e-2
    for seed in range(2):
        v = unit_direction(eta, seed)
        fd = (outer(jax.tree.map(lambda a, b: a + eps * b, eta, v)) - outer(jax.tree.map(lambda a, b: a - eps * b, eta, v))) / (2 * eps)
        for mode in ("autodiff", "mixed"):
            analytic = tree_dot(grads[mode], v)
            assert abs(float(fd) - analytic) <= 0.05 * abs(analytic) + 3e-5, (mode, float(fd), analytic)


def test_softmax_weights_ignore_padding_rows_and_padding_tokens(setup):
    _, rater_g, _, eta, _ = setup
    rng = np.random.default_rng(0)
    b = batch(rng, (4, 8))
    seg = np.ones((4, 8), np.int32)
    seg[1] = 0  # an all-padding row
    seg[2, 5:] = 0  # a row with padding at the end
    b["segment_ids"] = jnp.asarray(seg)
    scores = nnx.merge(rater_g, eta)(b["tokens"], b["segment_ids"], b["positions"])
    w = softmax_weights(scores, valid_rows(b))
    assert float(w[1]) == 0.0 and float(jnp.sum(w)) == pytest.approx(1.0, abs=1e-6)
    # the padding tokens of row 2 and the contents of row 1 cannot change any score or weight
    toks = np.asarray(b["tokens"]).copy()
    toks[2, 5:] = 9
    toks[1] = 4
    scores2 = nnx.merge(rater_g, eta)(jnp.asarray(toks), b["segment_ids"], b["positions"])
    np.testing.assert_allclose(np.asarray(scores2)[[0, 2, 3]], np.asarray(scores)[[0, 2, 3]], atol=1e-6)
    np.testing.assert_allclose(softmax_weights(scores2, valid_rows(b)), w, atol=1e-7)


def test_outer_update_average_params_is_the_mean_of_member_adam_steps():
    tx = outer_optimizer(lr=0.1, warmup_steps=0, weight_decay=0.1, clip_norm=1.0)
    eta = {"a": jnp.array([1.0, -2.0]), "b": jnp.array(0.5)}
    grads = {"a": jnp.array([[0.3, -0.1], [-0.2, 0.4]]), "b": jnp.array([0.1, -0.3])}
    states = jax.vmap(lambda _: tx.init(eta))(jnp.arange(2))
    new, _, bad = outer_update(tx, eta, states, grads, "average_params")
    expected = []
    for p in range(2):
        g = jax.tree.map(lambda x, p=p: x[p], grads)
        upd, _ = tx.update(g, tx.init(eta), eta)
        expected.append(optax.apply_updates(eta, upd))
    mean = jax.tree.map(lambda *xs: sum(xs) / 2, *expected)
    assert not np.asarray(bad).any()
    for k in eta:
        np.testing.assert_allclose(new[k], mean[k], rtol=1e-6)
    # every member non-finite: the update is skipped, nothing NaN is kept
    nan = jax.tree.map(lambda g: g.at[0].set(jnp.nan).at[1].set(jnp.nan), grads)
    kept, kept_states, bad = outer_update(tx, eta, states, nan, "average_params")
    assert np.asarray(bad).all()
    for k in eta:
        np.testing.assert_array_equal(kept[k], eta[k])
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(kept_states))


@pytest.mark.parametrize("mode", ["average_params", "average_grads"])
def test_a_non_finite_member_is_left_out_and_the_others_update(mode):
    """One diverged member of three: the update equals the two finite members' update alone, and
    the diverged member's outer state is kept as it was."""
    tx = outer_optimizer(lr=0.1, warmup_steps=0, weight_decay=0.1, clip_norm=1.0)
    eta = {"a": jnp.array([1.0, -2.0]), "b": jnp.array(0.5)}
    grads = {"a": jnp.array([[0.3, -0.1], [jnp.nan, 0.4], [-0.2, 0.2]]), "b": jnp.array([0.1, -0.3, 0.2])}
    init = (lambda n: jax.vmap(lambda _: tx.init(eta))(jnp.arange(n))) if mode == "average_params" else (lambda n: tx.init(eta))
    new, states, bad = outer_update(tx, eta, init(3), grads, mode)
    two = jax.tree.map(lambda g: g[jnp.array([0, 2])], grads)
    want, want_states, _ = outer_update(tx, eta, init(2), two, mode)
    np.testing.assert_array_equal(np.asarray(bad), [False, True, False])
    for k in eta:
        np.testing.assert_allclose(new[k], want[k], rtol=1e-6)
        assert np.isfinite(np.asarray(new[k])).all()
    if mode == "average_params":  # member 1's Adam state untouched, the others' as in the 2-member update
        for got, ref, old in zip(jax.tree.leaves(states), jax.tree.leaves(want_states), jax.tree.leaves(init(3)), strict=True):
            np.testing.assert_allclose(np.asarray(got)[[0, 2]], np.asarray(ref), rtol=1e-6)
            np.testing.assert_array_equal(np.asarray(got)[1], np.asarray(old)[1])


@pytest.mark.slow
def test_plain_inner_steps_come_first_and_follow_the_raters_weights(setup):
    """A population step with K plain steps = K rater-weighted updates by hand, then the T-step meta-step."""
    lm_g, rater_g, theta, eta, tx = setup
    prob = problem(setup, "mixed")
    outer_tx = outer_optimizer(lr=1e-2, warmup_steps=0, weight_decay=0.1, clip_norm=1.0)
    pop, k, t = 2, 2, 1
    rng = np.random.default_rng(7)
    inner, held = batch(rng, (pop, k + t, 4, 8)), batch(rng, (pop, 4, 8))
    stack = lambda x: jnp.stack([x] * pop)
    state = {"eta": eta, "outer": jax.vmap(lambda _: outer_tx.init(eta))(jnp.arange(pop)),
             "theta": jax.tree.map(stack, theta), "inner": jax.tree.map(stack, tx.init(theta))}
    got, got_m = jax.jit(make_population_meta_step(prob, outer_tx, "average_params", plain_steps=k))(state, inner, held)

    thetas, opts = [], []
    for p in range(pop):
        th, st = theta, tx.init(theta)
        for i in range(k):
            b = jax.tree.map(lambda x, p=p, i=i: x[p, i], inner)
            w = softmax_weights(prob.scores(eta, b), valid_rows(b))
            th, st, _ = prob.lm_update(th, st, w, b)
        thetas.append(th)
        opts.append(st)
    manual = dict(state, theta=jax.tree.map(lambda *xs: jnp.stack(xs), *thetas),
                  inner=jax.tree.map(lambda *xs: jnp.stack(xs), *opts))
    rest = jax.tree.map(lambda x: x[:, k:], inner)
    want, want_m = jax.jit(make_population_meta_step(prob, outer_tx, "average_params"))(manual, rest, held)
    for key in ("outer_loss", "inner_loss", "meta_grad_norm", "scores"):
        np.testing.assert_allclose(np.asarray(got_m[key]), np.asarray(want_m[key]), rtol=1e-4, atol=1e-7, err_msg=key)
    # The members' parameters and optimiser states after all K + T steps. (The rater's own update
    # is not compared leaf by leaf: its output bias gets a zero meta-gradient up to rounding, as the
    # softmax ignores a shift, and the first outer Adam step turns rounding noise into +-lr.)
    for part in ("theta", "inner"):
        for a, b in zip(jax.tree.leaves(got[part]), jax.tree.leaves(want[part]), strict=True):
            np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=1e-4, atol=1e-6)
    # and the plain steps did change the members (the two calls are not trivially equal)
    assert float(optax.global_norm(jax.tree.map(jnp.subtract, manual["theta"], state["theta"]))) > 1e-3


# remat (meta.grad_mode's default) in make test; mixed in the slow suite (~14 s on 2 cores)
@pytest.mark.parametrize("mode", ["remat", pytest.param("mixed", marks=pytest.mark.slow)])
def test_meta_step_memory_is_flat_in_unroll_length(setup, mode):
    """As a loop, each extra inner step may keep only its inputs (theta, optimiser state, batch, w)
    for the backward pass, not activations: the rater's included (it once kept T batches' worth)."""
    _, _, theta, eta, tx = setup
    opt = tx.init(theta)
    rng = np.random.default_rng(0)
    held = batch(rng, (16, 64))

    def temp_bytes(unroll: int) -> int:
        inner = batch(rng, (unroll, 16, 64))
        compiled = jax.jit(problem(setup, mode).meta_grad).lower(eta, theta, opt, inner, held).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    nbytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves((theta, opt, held)))
    per_step = (temp_bytes(4) - temp_bytes(2)) / 2
    # Before the fix the growth was ~2.8 MB per step here; the inputs are ~44 kB.
    assert per_step <= 2 * nbytes, (per_step, nbytes)


# mixed in make test; autodiff in the slow suite (~14 s on 2 cores)
@pytest.mark.parametrize("mode", [pytest.param("autodiff", marks=pytest.mark.slow), "mixed"])
def test_microbatches_give_the_same_meta_gradient_in_less_memory(setup, mode):
    """meta.microbatch_rows: each inner gradient, the held-out loss and the rater's scores in 4 slices
    of the batch, summed (not averaged: the rows' token counts differ), in a fraction of the memory."""
    _, _, theta, eta, tx = setup
    rng = np.random.default_rng(5)
    inner, held = batch(rng, (2, 8, 64)), batch(rng, (8, 64))
    for b in (inner, held):  # uneven rows: padded tails of different lengths, one empty row
        keep = np.arange(64) < rng.integers(8, 64, b["tokens"].shape[:-1])[..., None]
        keep[..., 1, :] = False
        b["segment_ids"] = jnp.asarray(keep, jnp.int32)
    opt = tx.init(theta)

    def run(microbatches: int):
        p = MetaProblem(setup[0], setup[1], tx, mode, microbatches=microbatches, heldout_microbatches=microbatches)
        compiled = jax.jit(p.meta_grad).lower(eta, theta, opt, inner, held).compile()
        return compiled(eta, theta, opt, inner, held), compiled.memory_analysis().temp_size_in_bytes

    ((loss, (theta_t, _, aux)), grads), whole_bytes = run(1)
    ((loss4, (theta_t4, _, aux4)), grads4), micro_bytes = run(4)
    np.testing.assert_allclose(float(loss4), float(loss), rtol=1e-6)
    np.testing.assert_allclose(aux4["scores"], aux["scores"], rtol=1e-5, atol=1e-6)
    assert float(aux["weights"][:, 1].max()) == 0.0  # the empty row got no weight
    scale = float(optax.global_norm(grads))
    assert scale > 1e-4
    assert float(optax.global_norm(jax.tree.map(jnp.subtract, grads4, grads))) <= 1e-4 * scale
    assert float(optax.global_norm(jax.tree.map(jnp.subtract, theta_t4, theta_t))) <= 1e-5
    # here 4 microbatches need ~1/4 to ~1/7 of the temporary memory
    assert micro_bytes < 0.5 * whole_bytes, (micro_bytes, whole_bytes)


@pytest.mark.parametrize("microbatches", [1, 2])
def test_advance_is_rater_weighted_inner_steps_by_hand(setup, microbatches):
    """``advance`` (meta.plain_inner_steps): K inner Adam steps, each on the softmax of the rater's
    scores of its batch, the same whole or in microbatches; rows hold different token counts."""
    lm_g, rater_g, theta, eta, tx = setup
    rng = np.random.default_rng(11)
    batches = batch(rng, (3, 4, 8))
    keep = np.arange(8) < np.array([8, 3, 8, 5])[:, None]
    batches["segment_ids"] = jnp.asarray(np.broadcast_to(keep, (3, 4, 8)), jnp.int32)
    whole = MetaProblem(lm_g, rater_g, tx, "mixed")
    th, st = theta, tx.init(theta)
    for i in range(3):
        b = jax.tree.map(lambda x, i=i: x[i], batches)
        w = softmax_weights(whole.scores(eta, b), valid_rows(b))
        th, st, _ = whole.lm_update(th, st, w, b)
    prob = MetaProblem(lm_g, rater_g, tx, "mixed", microbatches=microbatches)
    got_th, got_st = jax.jit(prob.advance)(eta, theta, tx.init(theta), batches)
    moved = float(optax.global_norm(jax.tree.map(jnp.subtract, th, theta)))
    assert moved > 1e-3
    assert float(optax.global_norm(jax.tree.map(jnp.subtract, got_th, th))) <= 1e-5 * moved
    for a, b in zip(jax.tree.leaves(got_st), jax.tree.leaves(st), strict=True):
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=1e-4, atol=1e-7)
