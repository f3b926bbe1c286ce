"""The LM training and evaluation steps: pure functions of plain pytrees."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from datarater.models.transformer import mean_token_loss, sequence_losses


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation) -> Callable:
    """``(params, opt_state, batch) -> (params, opt_state, metrics)``; params is a pure dict."""

    def loss_fn(params, batch):
        loss, count = mean_token_loss(nnx.merge(graphdef, params), batch)
        return loss, count

    def train_step(params, opt_state, batch):
        (loss, count), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics = {"loss": loss, "grad_norm": optax.global_norm(grads), "tokens": count}
        return params, opt_state, metrics

    return train_step


def make_eval_step(graphdef: nnx.GraphDef) -> Callable:
    """``(params, batch) -> (summed NLL, predicted tokens)`` over the batch."""

    def eval_step(params, batch):
        nll, count = sequence_losses(nnx.merge(graphdef, params), batch)
        return jnp.sum(nll), jnp.sum(count)

    return eval_step
