"""Shardings of population-stacked pytrees (meta-training): members over the mesh's data axis.

The meta-state stacks ``P`` inner LMs (parameters, optimiser states, data batches) along a
leading population axis. That axis is laid over the mesh axes of the logical rule
``population`` (default: ``data``) when their size divides ``P``; inside a member, dimensions
follow the usual logical rules with those axes removed (so a member's parameters can still be
FSDP-sharded over ``fsdp``). The rater follows the same rules as the LM; on a pure data mesh
that replicates it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from datarater.parallel.mesh import _is_axes, _rule_axes, logical_to_spec

POPULATION = "population"


def population_axes(mesh: Mesh, rules: Mapping[str, Any], size: int) -> tuple[str, ...]:
    """Mesh axes carrying a population of ``size`` members (empty: every device holds all)."""
    names = _rule_axes(rules, POPULATION) if POPULATION in rules else ("data",)
    axes = tuple(a for a in names if a in mesh.shape and mesh.shape[a] > 1)
    shards = int(np.prod([mesh.shape[a] for a in axes])) if axes else 1
    return axes if axes and size % shards == 0 else ()


def members_per_device(mesh: Mesh, rules: Mapping[str, Any], size: int) -> int:
    axes = population_axes(mesh, rules, size)
    return size // int(np.prod([mesh.shape[a] for a in axes])) if axes else size


def member_rules(rules: Mapping[str, Any], taken: tuple[str, ...]) -> dict[str, Any]:
    """``rules`` without the mesh axes in ``taken`` (already used by the population axis)."""
    out: dict[str, Any] = {}
    for logical in rules:
        if logical == POPULATION:
            continue
        kept = [a for a in _rule_axes(rules, logical) if a not in taken]
        out[logical] = kept or None
    return out


def _entry(axes: tuple[str, ...]) -> Any:
    return None if not axes else (axes[0] if len(axes) == 1 else axes)


def stacked_spec(
    member_axes: tuple[str | None, ...], member_shape: tuple[int, ...], mesh: Mesh, rules: Mapping[str, Any], size: int
) -> PartitionSpec:
    """PartitionSpec of an array ``[size, *member_shape]`` whose member dims have these logical names."""
    pop = population_axes(mesh, rules, size)
    inner = logical_to_spec(member_axes, member_shape, member_rules(rules, pop), mesh)
    return PartitionSpec(_entry(pop), *inner)


def stacked_param_shardings(axes_tree: dict, stacked_shapes: dict, mesh: Mesh, rules: Mapping[str, Any]) -> dict:
    """NamedShardings of population-stacked parameters (leaves ``[P, ...]``), from a member's axes."""
    return jax.tree.map(
        lambda axes, x: NamedSharding(mesh, stacked_spec(axes, tuple(x.shape[1:]), mesh, rules, x.shape[0])),
        axes_tree,
        stacked_shapes,
        is_leaf=_is_axes,
    )


def optimizer_shardings(tx: optax.GradientTransformation, state_shapes: Any, param_shardings: Any, mesh: Mesh,
                        stacked: int = 0, rules: Mapping[str, Any] | None = None) -> Any:
    """Shardings of an optimiser state: moments as their parameters, the rest replicated.

    With ``stacked = P`` the state has a leading population axis on every leaf (``jax.vmap`` of
    ``tx.init``) and non-parameter leaves (step counts) are split like the population.
    """
    pop = population_axes(mesh, rules or {}, stacked) if stacked else ()

    def other(leaf: Any) -> NamedSharding:
        ndim = len(getattr(leaf, "shape", ()))
        return NamedSharding(mesh, PartitionSpec(_entry(pop)) if stacked and ndim >= 1 else PartitionSpec())

    return optax.tree_map_params(
        tx,
        lambda _, sharding: sharding,
        state_shapes,
        param_shardings,
        transform_non_params=lambda sub: jax.tree.map(other, sub),
        is_leaf=lambda x: isinstance(x, NamedSharding),
    )


def member_batch_axes(mesh: Mesh, rules: Mapping[str, Any], population: int, batch: int) -> tuple[str, ...]:
    """Mesh axes a member's batch of ``batch`` rows is split over: the ``batch`` rule's axes left by
    the population, when they divide it; none (each member's batch replicated) otherwise."""
    axes = _free_batch_axes(mesh, rules, population)
    return () if axes and batch % int(np.prod([mesh.shape[a] for a in axes])) else axes


def _free_batch_axes(mesh: Mesh, rules: Mapping[str, Any], population: int) -> tuple[str, ...]:
    """The ``batch`` rule's mesh axes (of size > 1) that the population leaves to each member."""
    rest = member_rules(rules, population_axes(mesh, rules, population))
    return tuple(a for a in _rule_axes(rest, "batch") if mesh.shape[a] > 1)


def replicated_batch_note(mesh: Mesh, rules: Mapping[str, Any], population: int, batch: int) -> str:
    """Why a member's batch is not split, when the population leaves batch axes that it does not
    divide (every device of a member then computes the whole batch); "" when it is split or
    no axis is left."""
    axes = _free_batch_axes(mesh, rules, population)
    if not axes or member_batch_axes(mesh, rules, population, batch):
        return ""
    shards = int(np.prod([mesh.shape[a] for a in axes]))
    where = " x ".join(f"{a}={mesh.shape[a]}" for a in axes)
    return (f"a member's batch of {batch} rows does not split over the {shards} devices its population leaves "
            f"({where}): each of them computes the whole batch; lay the population over more of the mesh "
            f"(mesh=population) or use a batch that {shards} divides")


def replicated_batch_notes(mesh: Mesh, rules: Mapping[str, Any], population: int, sizes: list[int]) -> list[str]:
    """`replicated_batch_note` of each distinct batch size (inner, held-out) that has one."""
    notes = (replicated_batch_note(mesh, rules, population, size) for size in dict.fromkeys(sizes))
    return [n for n in notes if n]


def stacked_batch_sharding(mesh: Mesh, rules: Mapping[str, Any], shape: tuple[int, ...], batch_dim: int) -> NamedSharding:
    """Sharding of per-member batches ``[P, ..., B, L]``: population axis, then ``batch`` at ``batch_dim``
    (`member_batch_axes`)."""
    spec: list[Any] = [None] * len(shape)
    spec[0] = _entry(population_axes(mesh, rules, shape[0]))
    spec[batch_dim] = _entry(member_batch_axes(mesh, rules, shape[0], shape[batch_dim]))
    return NamedSharding(mesh, PartitionSpec(*spec))
