"""The bilevel DataRater objective as pure functions of plain pytrees (docs/method.md, "Meta-training").

    w      = softmax over the batch of rater scores phi_eta(x_i)   (rows without tokens get 0)
    g      = grad_theta sum_i w_i l(x_i; theta)                    (l summed over a row's tokens)
    theta' = inner optimiser update (Adam family, state carried and differentiated)
    L_out  = mean next-token NLL of theta_T on a held-out batch, after T unrolled inner steps

The meta-gradient dL_out/deta differentiates through the unroll. ``grad_mode``:
- ``autodiff``: reverse-over-reverse through ``lax.scan``; stores every inner backward pass.
- ``remat``: the same with ``jax.checkpoint`` on each inner step; activations are recomputed.
- ``mixed``: MixFlow-MG. Each inner update has a custom VJP that keeps only its inputs and the
  inner gradient g; in the backward pass one forward-over-reverse product (``jax.jvp`` of
  ``jax.grad`` along the cotangent g_bar) gives the Hessian-vector product H g_bar (H is
  symmetric) and, for the weights, the directional derivatives grad l_i . g_bar.
  No inner backward activations are stored, and g is not computed twice as under remat.
  Where keeping one step's activations costs little (unrolled steps, and the last step of a
  loop), the forward pass keeps the linearisation of g instead and the backward pass evaluates
  only its tangent half, without recomputing the primal (nano T=2: 558 -> 490 ms). A loop's
  first step runs outside the loop too (also under ``autodiff``): its theta is not
  differentiated, so it needs no Hessian-vector product (nano T=8 mixed: 3,484 -> 3,200 ms,
  567 -> 723 MiB).
The rater scores all ``T`` inner batches outside the unroll: in one call, except under ``remat`` and
``mixed`` run as a loop, where it scores one batch at a time and recomputes its activations in the
backward pass, so their memory stays flat in ``T`` (`MetaProblem.batch_weights`).
``microbatches > 1`` runs every inner gradient and the scores (``heldout_microbatches``: the
held-out loss) as that many slices of the batch in a checkpointed loop (`train.microbatch`): the
same meta-gradient with one slice's activations alive at a time, which is what brings the paper's
400M members near 16 GiB chips (README, "Planning").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from datarater.models.transformer import sequence_losses, summed_nll
from datarater.train.microbatch import map_microbatches, merge, split

Batch = dict[str, jax.Array]


def valid_rows(batch: Batch) -> jax.Array:
    """``bool [B]``: rows holding at least one real token."""
    return jnp.any(batch["segment_ids"] != 0, axis=1)


def softmax_weights(scores: jax.Array, valid: jax.Array) -> jax.Array:
    """Softmax over the valid rows of a batch; padding rows get weight exactly 0."""
    masked = jnp.where(valid, scores, -jnp.inf)
    shifted = masked - jax.lax.stop_gradient(jnp.max(jnp.where(valid, scores, -1e30)))
    e = jnp.where(valid, jnp.exp(shifted), 0.0)
    return e / jnp.maximum(jnp.sum(e), 1e-30)


def _float0_like(tree: Any) -> Any:
    return jax.tree.map(lambda x: np.zeros(np.shape(x), dtype=jax.dtypes.float0), tree)


@dataclass(frozen=True)
class MetaProblem:
    """Graph definitions and optimisers that the pure functions close over."""

    lm_graphdef: nnx.GraphDef
    rater_graphdef: nnx.GraphDef
    inner_tx: optax.GradientTransformation
    grad_mode: str = "remat"
    # Unroll the T inner steps in the compiled program instead of a loop. Same arithmetic; used by
    # `datarater plan`, since XLA's cost analysis counts a loop body once, not T times.
    scan_unroll: bool = False
    # Each inner gradient and the rater's scores run as ``microbatches`` slices of the inner
    # batch in a loop (`train.microbatch`), the held-out loss as ``heldout_microbatches``; each
    # slice checkpointed: the same meta-gradient up to float rounding, with one slice's
    # activations alive at a time (meta.microbatch_rows).
    microbatches: int = 1
    heldout_microbatches: int = 1

    def seq_losses(self, theta: dict, batch: Batch) -> jax.Array:
        """``l(x_i; theta)`` for every row: next-token NLL summed over the row's tokens."""
        return sequence_losses(nnx.merge(self.lm_graphdef, theta), batch)[0]

    def scores(self, eta: dict, batch: Batch) -> jax.Array:
        return nnx.merge(self.rater_graphdef, eta)(batch["tokens"], batch["segment_ids"], batch["positions"])

    def heldout_loss(self, theta: dict, batch: Batch) -> jax.Array:
        def sums(part):
            return summed_nll(nnx.merge(self.lm_graphdef, theta), part), None

        (nll, count), _ = map_microbatches(sums, batch, self.heldout_microbatches)
        return nll / jnp.maximum(count, 1.0)

    # -- the inner gradient g(theta, w) and one inner update of the LM --------------------------
    def _grad_and_losses(self, theta: dict, w: jax.Array, batch: Batch) -> tuple[dict, jax.Array]:
        """``g = grad_theta sum_i w_i l(x_i; theta)`` (summed over microbatches) and ``l`` ``[B]``."""

        def weighted(th, w_part, part):
            losses = self.seq_losses(th, part)
            return jnp.sum(w_part * losses), losses

        def one(part):
            return jax.grad(weighted, has_aux=True)(theta, *part)

        return map_microbatches(one, (w, batch), self.microbatches)

    def _apply_optimizer(self, theta: dict, opt_state: Any, g: dict) -> tuple[dict, Any]:
        updates, opt_state = self.inner_tx.update(g, opt_state, theta)
        return optax.apply_updates(theta, updates), opt_state

    def lm_update(self, theta: dict, opt_state: Any, w: jax.Array, batch: Batch, store: bool | None = None):
        """``(theta', opt_state', l)``: one optimiser step on the ``w``-weighted batch loss.

        In ``mixed`` mode this function has a custom VJP (see `_mixed_lm_update`): with ``store``
        (default: when unrolled; never when microbatched) its forward pass keeps the linearisation
        of the inner gradient, otherwise only its inputs and g. The per-row losses ``l`` are
        returned for metrics only and are never differentiated.
        """
        if self.grad_mode == "mixed":
            store = self.scan_unroll if store is None else store
            # microbatched, a linearisation would keep every microbatch's activations
            store = store and self.microbatches == 1
            update = _mixed_lm_update_stored if store else _mixed_lm_update
            theta, opt_state, losses = update(self, theta, opt_state, w, batch)
        else:
            g, losses = self._grad_and_losses(theta, w, batch)
            theta, opt_state = self._apply_optimizer(theta, opt_state, g)
        return theta, opt_state, jax.lax.stop_gradient(losses)

    def batch_weights(self, eta: dict, inner_batches: Batch) -> tuple[jax.Array, jax.Array]:
        """Rater scores and softmax weights ``[T, B]`` of all inner batches (``[T, B, L]``).

        The scores do not depend on the inner model, so the rater runs outside the unroll, never
        inside a rematerialised inner step. Unrolled (and under ``autodiff``) it runs once on all
        ``T * B`` rows: one large forward and backward, fastest on CPU. As a loop under ``remat``
        or ``mixed`` it maps over the ``T`` batches with each call checkpointed, so the backward
        pass recomputes one batch's activations at a time instead of keeping ``T`` batches' worth
        (nano, T=8 mixed: 1,610 -> 488 MiB of temporary memory, benchmarks/meta_step.py).
        With ``microbatches > 1`` it always maps, over microbatches of each batch.
        """
        one_call = self.grad_mode == "autodiff" or self.scan_unroll or inner_batches["tokens"].shape[0] == 1
        return self._weights(eta, inner_batches, one_call and self.microbatches == 1)

    def _weights(self, eta: dict, batches: Batch, one_call: bool) -> tuple[jax.Array, jax.Array]:
        t, b, length = batches["tokens"].shape
        if one_call:
            flat = {k: v.reshape(t * b, length) for k, v in batches.items()}
            scores = self.scores(eta, flat).reshape(t, b)
        else:
            n = self.microbatches
            parts = jax.tree.map(lambda x: x.reshape(t * n, b // n, length), jax.vmap(lambda x: split(x, n))(batches))
            scores = jax.lax.map(lambda part: jax.checkpoint(self.scores)(eta, part), parts)
            scores = jax.vmap(merge)(scores.reshape(t, n, b // n))
        return scores, jax.vmap(softmax_weights)(scores, jax.vmap(valid_rows)(batches))

    def advance(self, eta: dict, theta: dict, opt_state: Any, batches: Batch) -> tuple[dict, Any]:
        """``len(batches)`` rater-weighted inner steps that are not differentiated (``[K, B, L]``).

        They age the inner model between meta-gradients at the cost of plain training steps
        (``meta.plain_inner_steps``), so a short meta-training run still sees late-training members.
        """
        _, weights = self._weights(jax.lax.stop_gradient(eta), batches, self.microbatches == 1)  # not differentiated

        def body(carry, xs):
            th, st = carry
            batch, w = xs
            g, _ = self._grad_and_losses(th, w, batch)
            return self._apply_optimizer(th, st, g), None

        (theta, opt_state), _ = jax.lax.scan(body, (theta, opt_state), (batches, weights))
        return theta, opt_state

    # -- the unrolled outer loss -------------------------------------------------------------------
    def outer_loss(self, eta: dict, theta: dict, opt_state: Any, inner_batches: Batch, heldout: Batch):
        """L_out after ``T`` inner steps (``inner_batches`` leaves are ``[T, B, L]``).

        Returns ``(loss, (theta_T, opt_state_T, aux))`` where aux stacks each step's metrics.
        """
        scores, weights = self.batch_weights(eta, inner_batches)

        def body(carry, xs, store=None):
            th, st = carry
            batch, w = xs
            th, st, losses = self.lm_update(th, st, w, batch, store=store)
            tokens = jnp.sum(batch["segment_ids"][:, 1:] != 0)
            return (th, st), jnp.sum(losses) / jnp.maximum(tokens, 1)

        if self.grad_mode == "remat":
            body = jax.checkpoint(body)
        # mixed needs no checkpoint: its custom VJP keeps only (theta, state, w, g) per step.
        # Run as a loop, autodiff and mixed take the first and last steps outside the loop. The
        # first one's theta is not differentiated, so its backward pass needs only the weights'
        # cotangents, not the Hessian-vector product a loop body computes for every step (nano T=8:
        # autodiff 4.2 -> 3.4 s and 5,127 -> 4,517 MiB). Under mixed the last one keeps its
        # linearisation (unless microbatched): one step's activations more, one primal
        # recomputation less. remat keeps
        # every step in the loop: it is the mode of least memory (the same split: -2% time, +40%).
        steps = weights.shape[0]
        xs = (inner_batches, weights)
        one = lambda i: jax.tree.map(lambda x: x[i], xs)
        if self.grad_mode in ("autodiff", "mixed") and not self.scan_unroll and steps > 1:
            carry, first_loss = body((theta, opt_state), one(0))
            carry, loop_loss = jax.lax.scan(body, carry, jax.tree.map(lambda x: x[1:-1], xs))
            carry, last_loss = body(carry, one(-1), store=True)
            inner_loss = jnp.concatenate([first_loss[None], loop_loss, last_loss[None]])
        else:
            carry, inner_loss = jax.lax.scan(body, (theta, opt_state), xs, unroll=self.scan_unroll)
        theta_t, state_t = carry
        aux = {"scores": jax.lax.stop_gradient(scores), "weights": jax.lax.stop_gradient(weights),
               "inner_loss": inner_loss}
        return self.heldout_loss(theta_t, heldout), (theta_t, state_t, aux)

    def meta_grad(self, eta: dict, theta: dict, opt_state: Any, inner_batches: Batch, heldout: Batch):
        """``((L_out, (theta_T, opt_state_T, aux)), dL_out/deta)``."""
        return jax.value_and_grad(self.outer_loss, has_aux=True)(eta, theta, opt_state, inner_batches, heldout)


def _lm_update_primal(problem: MetaProblem, theta: dict, opt_state: Any, w: jax.Array, batch: Batch):
    g, losses = problem._grad_and_losses(theta, w, batch)
    theta, opt_state = problem._apply_optimizer(theta, opt_state, g)
    return theta, opt_state, losses


# Two custom VJPs of the same update, differing in what the forward pass keeps for the backward one.
_mixed_lm_update = jax.custom_vjp(_lm_update_primal, nondiff_argnums=(0,))
_mixed_lm_update_stored = jax.custom_vjp(_lm_update_primal, nondiff_argnums=(0,))


def _mixed_fwd(problem, theta, opt_state, w, batch):
    g, losses = problem._grad_and_losses(theta, w, batch)
    new_theta, new_state = problem._apply_optimizer(theta, opt_state, g)
    return (new_theta, new_state, losses), (theta, opt_state, w, batch, g)


def _mixed_bwd(problem, residuals, cotangents):
    """MixFlow-MG backward rule of one inner update, storing only its inputs and the gradient g.

    The optimiser's VJP (it needs g, kept from the forward pass) maps the incoming cotangents to
    g_bar; then one forward-over-reverse product, ``jax.jvp`` of theta -> (g, l) along g_bar,
    gives H g_bar for theta (H is symmetric) and grad l_i . g_bar, which is the cotangent of w_i
    since dg/dw_i = grad l_i. The jvp recomputes g alongside its tangent in one pass and keeps
    no linearisation, so no inner backward activations outlive it.
    """
    theta, opt_state, w, batch, g = residuals

    def g_and_losses_jvp(g_bar):
        return jax.jvp(lambda th: problem._grad_and_losses(th, w, batch), (theta,), (g_bar,))[1]

    return _mixed_cotangents(problem, theta, opt_state, g, batch, cotangents, g_and_losses_jvp)


def _mixed_cotangents(problem, theta, opt_state, g, batch, cotangents, g_and_losses_jvp):
    """Cotangents of (theta, opt_state, w, batch) from those of (theta', opt_state', l)."""
    theta_bar, state_bar, _ = cotangents  # the losses are only read under stop_gradient
    _, opt_vjp = jax.vjp(problem._apply_optimizer, theta, opt_state, g)
    theta_bar_direct, state_bar_in, g_bar = opt_vjp((theta_bar, state_bar))
    hvp, w_bar = g_and_losses_jvp(g_bar)
    theta_bar_in = jax.tree.map(jnp.add, theta_bar_direct, hvp)
    return theta_bar_in, state_bar_in, w_bar, _float0_like(batch)


_mixed_lm_update.defvjp(_mixed_fwd, _mixed_bwd)


def _mixed_stored_fwd(problem, theta, opt_state, w, batch):
    """As `_mixed_fwd`, but keeps the linearisation of theta -> (g, l) at theta.

    For unrolled inner steps (``scan_unroll``): XLA keeps every unrolled step's buffers alive
    anyway, so storing the primal activations costs little memory (nano T=2: 958 against 940 MiB)
    and the backward pass evaluates only the tangent half of the forward-over-reverse product
    instead of recomputing the primal too (nano T=2: 558 -> 490 ms, the same meta-gradient).
    """
    (g, losses), g_and_losses_jvp = jax.linearize(lambda th: problem._grad_and_losses(th, w, batch), theta)
    new_theta, new_state = problem._apply_optimizer(theta, opt_state, g)
    return (new_theta, new_state, losses), (theta, opt_state, g, g_and_losses_jvp, batch)


def _mixed_stored_bwd(problem, residuals, cotangents):
    theta, opt_state, g, g_and_losses_jvp, batch = residuals
    return _mixed_cotangents(problem, theta, opt_state, g, batch, cotangents, g_and_losses_jvp)


_mixed_lm_update_stored.defvjp(_mixed_stored_fwd, _mixed_stored_bwd)


# -- the outer update over a population ------------------------------------------------------------
def outer_optimizer(lr: float, warmup_steps: int, weight_decay: float, clip_norm: float) -> optax.GradientTransformation:
    """Adam with decoupled weight decay, linear warm-up to a constant rate and global-norm clipping."""
    schedule = optax.linear_schedule(0.0, lr, max(warmup_steps, 1)) if warmup_steps > 0 else lr
    parts = [optax.clip_by_global_norm(clip_norm)] if clip_norm > 0 else []
    parts.append(optax.adamw(schedule, b1=0.9, b2=0.999, weight_decay=weight_decay))
    return optax.chain(*parts)


def member_finite(grads: dict) -> jax.Array:
    """``[P]`` whether every entry of member p's meta-gradient is finite."""
    leaves = [jnp.all(jnp.isfinite(g.reshape(g.shape[0], -1)), axis=1) for g in jax.tree.leaves(grads)]
    return jnp.all(jnp.stack(leaves), axis=0)


def outer_update(
    tx: optax.GradientTransformation, eta: dict, outer_states: Any, grads: dict, mode: str
) -> tuple[dict, Any, jax.Array]:
    """Applies the population's meta-gradients (leading axis P) to the rater.

    ``average_params`` (the paper): each member's gradient goes through its own outer Adam state
    and the resulting rater parameters are averaged. ``average_grads``: one Adam step on the mean
    gradient (``outer_states`` then has no leading axis). A member whose gradient is not finite
    (a diverged inner LM) is left out of the average and its outer state kept; the others update.
    Returns ``(eta, outer_states, bad)``, ``bad`` ``[P]`` the members left out; when all are, the
    rater and its states are unchanged (the update is skipped), so the rater never becomes NaN.
    """
    good = member_finite(grads)
    n_good = jnp.sum(good)
    any_good = n_good > 0
    expand = lambda m, x: m.reshape((-1,) + (1,) * (x.ndim - 1))
    clean = jax.tree.map(lambda g: jnp.where(expand(good, g), g, 0.0), grads)  # NaN never enters the maths
    share = good / jnp.maximum(n_good, 1)
    if mode == "average_params":

        def one(state, g):
            updates, state = tx.update(g, state, eta)
            return optax.apply_updates(eta, updates), state

        etas, new_states = jax.vmap(one)(outer_states, clean)
        new_eta = jax.tree.map(lambda x: jnp.tensordot(share.astype(x.dtype), x, axes=1), etas)
        new_states = jax.tree.map(lambda a, b: jnp.where(expand(good, a), a, b), new_states, outer_states)
    elif mode == "average_grads":
        mean_g = jax.tree.map(lambda g: jnp.tensordot(share.astype(g.dtype), g, axes=1), clean)
        updates, new_states = tx.update(mean_g, outer_states, eta)
        new_eta = optax.apply_updates(eta, updates)
    else:
        raise ValueError(f"unknown outer update mode {mode!r}")
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(any_good, a, b), new, old)
    return keep(new_eta, eta), keep(new_states, outer_states), jnp.logical_not(good)


def make_population_meta_step(
    problem: MetaProblem, outer_tx: optax.GradientTransformation, outer_mode: str,
    spmd_axis_name: str | tuple[str, ...] | None = None, plain_steps: int = 0,
) -> Callable:
    """``(state, inner_batches [P,K+T,B,L], heldout [P,B,L]) -> (state, metrics)``.

    ``state = {"eta", "outer", "theta", "inner"}``; ``theta`` and ``inner`` have a leading
    population axis. Each member first takes the ``K = plain_steps`` rater-weighted steps that are
    not differentiated (`MetaProblem.advance`), then the ``T`` unrolled ones of its meta-gradient,
    and keeps its theta_T (truncated unroll: members keep training across meta-steps);
    re-initialisation at the end of a lifetime happens outside.
    """

    def step(state, inner_batches, heldout):
        # spmd_axis_name: the mesh axes the population is laid over, so that sharding constraints
        # inside a member (batch-split activations) keep the members split too
        theta, inner = state["theta"], state["inner"]
        if plain_steps:
            plain = jax.tree.map(lambda x: x[:, :plain_steps], inner_batches)
            inner_batches = jax.tree.map(lambda x: x[:, plain_steps:], inner_batches)
            advance = jax.vmap(problem.advance, in_axes=(None, 0, 0, 0), spmd_axis_name=spmd_axis_name)
            theta, inner = advance(state["eta"], theta, inner, plain)
        per_member = jax.vmap(problem.meta_grad, in_axes=(None, 0, 0, 0, 0), spmd_axis_name=spmd_axis_name)
        (loss, (theta_t, inner_t, aux)), grads = per_member(state["eta"], theta, inner, inner_batches, heldout)
        eta, outer, bad = outer_update(outer_tx, state["eta"], state["outer"], grads, outer_mode)
        w = aux["weights"]  # [P, T, B]
        metrics = {
            "outer_loss": jnp.mean(loss),
            "inner_loss": jnp.mean(aux["inner_loss"]),
            "meta_grad_norm": optax.global_norm(jax.tree.map(
                lambda g: jnp.mean(jnp.where(bad.reshape((-1,) + (1,) * (g.ndim - 1)), 0.0, g), axis=0), grads)),
            "score_mean": jnp.mean(aux["scores"]),
            "score_std": jnp.std(aux["scores"]),
            "effective_batch": jnp.mean(1.0 / jnp.sum(w * w, axis=-1)),
            "bad_members": bad,  # [P] members whose meta-gradient was not finite (left out)
            "scores": aux["scores"],
        }
        return {"eta": eta, "outer": outer, "theta": theta_t, "inner": inner_t}, metrics

    return step
