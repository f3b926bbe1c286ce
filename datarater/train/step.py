"""The LM training and evaluation steps (pure functions of plain pytrees) and the validation loss over batches."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from datarater.models.transformer import summed_nll
from datarater.parallel.mesh import put_batch
from datarater.train.microbatch import map_microbatches


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, microbatches: int = 1) -> Callable:
    """``(params, opt_state, batch) -> (params, opt_state, metrics)``; params is a pure dict.

    The loss is the mean NLL per predicted token over the whole batch. With ``microbatches > 1``
    the batch runs as that many slices in a loop (`map_microbatches`): their summed NLL and its
    gradient are added up and divided by the batch's token count once, so the update is the
    whole batch's, up to float rounding.
    """

    def summed_loss(params, batch):
        return summed_nll(nnx.merge(graphdef, params), batch)

    def train_step(params, opt_state, batch):
        def one(part):
            (nll, count), grads = jax.value_and_grad(summed_loss, has_aux=True)(params, part)
            return (grads, nll, count), None

        (grads, nll, count), _ = map_microbatches(one, batch, microbatches)
        scale = 1.0 / jnp.maximum(count, 1.0)
        grads = jax.tree.map(lambda g: g * scale.astype(g.dtype), grads)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics = {"loss": nll * scale, "grad_norm": optax.global_norm(grads), "tokens": count}
        return params, opt_state, metrics

    return train_step


def make_eval_step(graphdef: nnx.GraphDef, microbatches: int = 1) -> Callable:
    """``(params, batch) -> (summed NLL, predicted tokens)`` over the batch (in microbatches)."""

    def eval_step(params, batch):
        def sums(part):
            return summed_nll(nnx.merge(graphdef, params), part), None

        return map_microbatches(sums, batch, microbatches)[0]

    return eval_step


def evaluate(eval_fn: Callable, params, batches: list[dict], mesh, rules) -> float:
    """Mean NLL per predicted token (nats) of ``eval_fn`` (a jitted `make_eval_step`) over global
    ``batches``; each process feeds its own slice of every batch's rows."""
    pi, pc = jax.process_index(), jax.process_count()
    total, count = 0.0, 0.0
    for batch in batches:
        rows = len(batch["tokens"]) // pc
        local = {k: v[pi * rows : (pi + 1) * rows] for k, v in batch.items() if k != "index"}
        nll, n = eval_fn(params, put_batch(local, mesh, rules))
        total += float(nll)
        count += float(n)
    return total / max(count, 1.0)
