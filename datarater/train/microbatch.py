"""Microbatching: one batch run as ``n`` slices in a loop, so a step holds one slice's activations.

Rows are dealt out strided: microbatch ``m`` holds rows ``m, m + n, m + 2n, ...``. A batch split
over devices in contiguous blocks (``parallel.mesh.batch_sharding``) then leaves every microbatch
spread evenly over all devices, as long as each device's rows divide by ``n`` (`microbatch_count`),
and the split and merge move no data between devices.

`map_microbatches` sums what is summable (gradients, loss sums, token counts) and puts per-row
outputs back in the batch's order; the loop body is checkpointed, so a caller that differentiates
through the loop (the meta-gradient) keeps one microbatch's activations at a time, not ``n``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from datarater.errors import UserError
from datarater.parallel.mesh import batch_shards


def split(tree: Any, n: int) -> Any:
    """Leaves ``[B, ...]`` -> ``[n, B / n, ...]``; microbatch ``m`` holds rows ``m, m + n, ...``."""
    return jax.tree.map(lambda x: jnp.swapaxes(x.reshape(x.shape[0] // n, n, *x.shape[1:]), 0, 1), tree)


def merge(tree: Any) -> Any:
    """The inverse of `split`: leaves ``[n, B / n, ...]`` -> ``[B, ...]`` in the batch's order."""
    return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1).reshape(x.shape[0] * x.shape[1], *x.shape[2:]), tree)


def map_microbatches(fn: Callable[[Any], tuple[Any, Any]], batch: Any, n: int) -> tuple[Any, Any]:
    """``fn(microbatch) -> (total, rows)`` over ``n`` microbatches of ``batch``, one after another.

    Returns ``total`` (any pytree) summed over the microbatches and ``rows`` (leaves ``[b, ...]``
    with ``b`` the microbatch's rows) merged back to the whole batch's rows. ``n == 1`` calls ``fn``
    on the whole batch directly.
    """
    if n == 1:
        return fn(batch)
    parts = split(batch, n)
    body = jax.checkpoint(fn)
    first = jax.eval_shape(body, jax.tree.map(lambda x: x[0], parts))[0]

    def step(acc, part):
        total, rows = body(part)
        return jax.tree.map(lambda a, t: a + t.astype(a.dtype), acc, total), rows

    # sums in at least float32 (bfloat16 gradients of many microbatches would lose digits)
    wide = lambda dt: jnp.promote_types(dt, jnp.float32) if jnp.issubdtype(dt, jnp.floating) else dt
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, wide(s.dtype)), first)
    total, rows = jax.lax.scan(step, zeros, parts)
    return jax.tree.map(lambda t, s: t.astype(s.dtype), total, first), merge(rows)


def microbatch_count(key: str, batch_size: int, shards: int, rows: int) -> int:
    """Microbatches of ``rows`` rows per device in a batch split over ``shards`` devices.

    ``rows = 0``, or at least the rows a device holds: 1 (the whole batch at once). Otherwise
    ``rows`` must divide each device's rows; ``key`` names the setting in the error.
    """
    per_device = max(batch_size // shards, 1)
    if rows <= 0 or rows >= per_device:
        return 1
    if per_device % rows:
        where = f" ({shards} batch shards)" if shards > 1 else ""
        raise UserError(f"config key '{key}': {rows} rows per microbatch do not divide the {per_device} rows "
                        f"each device holds of a batch of {batch_size}{where}; use a divisor of {per_device}")
    return per_device // rows


def check_batch(train, mesh, rules) -> tuple[int, int]:
    """Per-process batch size, and microbatches per step, of ``train`` (a ``TrainConfig``): the
    global batch must split evenly over processes and batch shards, and each device's rows into
    ``train.microbatch_rows``."""
    shards, pc = batch_shards(mesh, rules), jax.process_count()
    if train.batch_size % shards or train.batch_size % pc:
        raise UserError(
            f"train.batch_size={train.batch_size} must be divisible by the {shards} batch shards of the mesh "
            f"and the {pc} processes"
        )
    micro = microbatch_count("train.microbatch_rows", train.batch_size, shards, train.microbatch_rows)
    return train.batch_size // pc, micro
