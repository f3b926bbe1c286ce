"""The models' hook for activation sharding: `constrain` pins a hidden state batch-split, when asked.

A model calls `constrain` on its hidden states (after the embedding and after each block). It
is the identity unless `datarater.parallel.activations` has named the mesh axes of the batch
(`batch_axes`, entered while a step is traced), so models stay usable anywhere; the policy (which
axes, from the logical rules) lives in ``parallel``, the hook here, below it.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

_CURRENT: contextvars.ContextVar[tuple[Mesh, tuple[str, ...]] | None] = contextvars.ContextVar(
    "datarater_activation_sharding", default=None
)


@contextlib.contextmanager
def batch_axes(mesh: Mesh, axes: tuple[str, ...]) -> Iterator[None]:
    """While active, `constrain` splits leading (batch) axes over the mesh axes ``axes``."""
    token = _CURRENT.set((mesh, axes))
    try:
        yield
    finally:
        _CURRENT.reset(token)


def constrain(x: jax.Array) -> jax.Array:
    """``x`` (``[batch, ...]`` or ``[batch * seq, ...]``) with its leading axis batch-split, the rest
    replicated; the identity outside `batch_axes` or when the axis does not divide."""
    current = _CURRENT.get()
    if current is None or not current[1] or x.ndim == 0:
        return x
    mesh, axes = current
    if x.shape[0] % int(np.prod([mesh.shape[a] for a in axes])):
        return x
    first = axes[0] if len(axes) == 1 else axes
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, PartitionSpec(first, *([None] * (x.ndim - 1)))))
