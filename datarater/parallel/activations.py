"""Sharding constraints on activations: keep the batch axis split inside the model.

Under FSDP, parameters are split over ``fsdp`` along their ``embed`` axis and the batch over
``(data, fsdp)``. Left to itself, XLA's sharding propagation may all-gather the activations
(the full batch on every device) instead of the weights. A model that calls `constrain` on its
hidden states (after the embedding and after each block) pins them batch-split; the caller turns
this on while the step is traced:

    with shard_activations(mesh, rules):
        compiled = jax.jit(step).lower(...).compile()      # or the step's first call

Outside the context `constrain` is the identity, so models stay usable anywhere. Inside a
``vmap`` over a mesh axis (the meta-step's population), give the vmap ``spmd_axis_name`` and
the rules without that axis (``population.member_rules``), as `meta.trainer.make_meta_step` does.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from datarater.parallel.mesh import _rule_axes

_CURRENT: contextvars.ContextVar[tuple[Mesh, tuple[str, ...]] | None] = contextvars.ContextVar(
    "datarater_activation_sharding", default=None
)


@contextlib.contextmanager
def activation_rules(mesh: Mesh, rules: Mapping[str, Any]) -> Iterator[None]:
    """While active, `constrain` splits leading (batch) axes over the ``batch`` rule's mesh axes.

    Enter it inside the function being traced (then the constraint is part of that function);
    around a call of an already-jitted function use `shard_activations`.
    """
    axes = tuple(a for a in _rule_axes(rules, "batch") if mesh.shape[a] > 1)
    token = _CURRENT.set((mesh, axes))
    try:
        yield
    finally:
        _CURRENT.reset(token)


@contextlib.contextmanager
def shard_activations(mesh: Mesh, rules: Mapping[str, Any]) -> Iterator[None]:
    """`activation_rules`, and ``mesh`` as JAX's current mesh (``jax.set_mesh``), which is part of
    ``jax.jit``'s cache key: a function traced outside the context is traced again inside it."""
    with jax.set_mesh(mesh), activation_rules(mesh, rules):
        yield


def batch_split(fn: Callable, mesh: Mesh, rules: Mapping[str, Any]) -> Callable:
    """``fn`` entering `activation_rules` while it is traced: wrap before ``jax.jit``."""

    @functools.wraps(fn)
    def traced(*args):
        with activation_rules(mesh, rules):
            return fn(*args)

    return traced


def constrain(x: jax.Array) -> jax.Array:
    """``x`` (``[batch, ...]`` or ``[batch * seq, ...]``) with its leading axis batch-split, the rest
    replicated; the identity outside `shard_activations` or when the axis does not divide."""
    current = _CURRENT.get()
    if current is None or not current[1] or x.ndim == 0:
        return x
    mesh, axes = current
    if x.shape[0] % int(np.prod([mesh.shape[a] for a in axes])):
        return x
    first = axes[0] if len(axes) == 1 else axes
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, PartitionSpec(first, *([None] * (x.ndim - 1)))))
