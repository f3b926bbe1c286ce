"""The LM training and evaluation steps (pure functions of plain pytrees) and the validation loss over batches."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from datarater.models.transformer import next_token_targets, summed_nll
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


def make_token_nll_step(graphdef: nnx.GraphDef) -> Callable:
    """``(params, batch) -> [B, L-1]``: each predicted token's NLL (0 where nothing is predicted)."""

    def token_nll(params, batch):
        model = nnx.merge(graphdef, params)
        logits = model(batch["tokens"], batch["segment_ids"], batch["positions"])[:, :-1]
        targets, mask = next_token_targets(batch["tokens"], batch["segment_ids"])
        nll = -jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), targets[..., None], axis=-1)[..., 0]
        return nll * mask.astype(nll.dtype)

    return token_nll


def document_nll(token_fn: Callable, params, packed, batch_size: int, mesh, rules) -> tuple:
    """Summed NLL and predicted-token count per document of ``packed`` (a `PackedSequences`):
    ``(nll [n_docs], count [n_docs])``, float64. ``token_fn`` is a jitted `make_token_nll_step`;
    every row is evaluated once (the last batch padded); each process feeds its slice of a batch."""
    import numpy as np

    from datarater.data.pipeline import eval_batches

    pi, pc = jax.process_index(), jax.process_count()
    nll_doc = np.zeros(len(packed.doc_ids))
    count_doc = np.zeros(len(packed.doc_ids))
    for batch in eval_batches(packed, batch_size, 0):
        rows = len(batch["tokens"]) // pc
        local = {k: v[pi * rows : (pi + 1) * rows] for k, v in batch.items() if k != "index"}
        out = token_fn(params, put_batch(local, mesh, rules))
        if pc > 1:
            from jax.experimental import multihost_utils

            out = multihost_utils.process_allgather(out, tiled=True)
        nll = np.asarray(out, dtype=np.float64)
        index, seg = batch["index"], batch["segment_ids"][:, 1:]
        real = index >= 0
        seg, nll, index = seg[real], nll[real], index[real]
        mask = (seg > 0) & (seg == batch["segment_ids"][real][:, :-1])  # as `next_token_targets`
        row = np.repeat(index[:, None], seg.shape[1], axis=1)
        doc = packed.row_docs[np.minimum(packed.row_doc_start[row] + np.maximum(seg, 1) - 1, len(packed.row_docs) - 1)]
        np.add.at(nll_doc, doc[mask], nll[mask])
        np.add.at(count_doc, doc[mask], 1.0)
    return nll_doc, count_doc
