"""Sharding policy for activations: keep the batch axis split inside the model, over the rules' mesh axes.

Under FSDP, parameters are split over ``fsdp`` along their ``embed`` axis and the batch over
``(data, fsdp)``. Left to itself, XLA's sharding propagation may all-gather the activations
(the full batch on every device) instead of the weights. A model that calls `constrain`
(`datarater.models.sharding`) on its hidden states (after the embedding and after each block) pins them batch-split; the caller turns
this on while the step is traced:

    with shard_activations(mesh, rules):
        compiled = jax.jit(step).lower(...).compile()      # or the step's first call

Outside the context `constrain` is the identity, so models stay usable anywhere. Inside a
``vmap`` over a mesh axis (the meta-step's population), give the vmap ``spmd_axis_name`` and
the rules without that axis (``population.member_rules``), as `meta.state.make_meta_step` does.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
from jax.sharding import Mesh

from datarater.models.sharding import batch_axes, constrain
from datarater.parallel.mesh import _rule_axes

__all__ = ["activation_rules", "batch_split", "constrain", "shard_activations"]

@contextlib.contextmanager
def activation_rules(mesh: Mesh, rules: Mapping[str, Any]) -> Iterator[None]:
    """While active, `constrain` splits leading (batch) axes over the ``batch`` rule's mesh axes.

    Enter it inside the function being traced (then the constraint is part of that function);
    around a call of an already-jitted function use `shard_activations`.
    """
    axes = tuple(a for a in _rule_axes(rules, "batch") if mesh.shape[a] > 1)
    with batch_axes(mesh, axes):
        yield


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
