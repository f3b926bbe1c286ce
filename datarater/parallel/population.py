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
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from datarater.parallel.mesh import _is_axes, _rule_axes, logical_to_spec, param_shardings

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


def put_stacked(batch: Mapping[str, Any], mesh: Mesh, rules: Mapping[str, Any], batch_dim: int) -> dict:
    """Global arrays of population-stacked batches (the same numpy values on every process)."""
    out = {}
    for k, v in batch.items():
        v = np.asarray(v)
        sharding = stacked_batch_sharding(mesh, rules, v.shape, batch_dim)
        out[k] = jax.make_array_from_callback(v.shape, sharding, lambda index, v=v: v[index])
    return out


def population_state_shardings(shapes: dict, lm_axes: dict, rater_axes: dict, inner_tx: optax.GradientTransformation,
                                outer_tx: optax.GradientTransformation, mesh: Mesh, rules: Mapping[str, Any],
                                population: int, outer_stacked: bool) -> dict:
    """NamedShardings of a meta-state ``{eta, outer, theta, inner}`` (``shapes``: its ShapeDtypeStructs):
    members over the population axes, the rater by the rules.

    ``theta`` and ``inner`` (and ``outer`` when ``outer_stacked``: one outer optimiser per member)
    have a leading population axis; the rater ``eta`` has none and is sharded like any model
    (replicated on a data mesh). ``lm_axes`` / ``rater_axes``: logical axis names of one member's
    and of the rater's parameters (`datarater.parallel.mesh.logical_axes_of`).
    """
    eta = param_shardings(rater_axes, shapes["eta"], rules, mesh)
    theta = stacked_param_shardings(lm_axes, shapes["theta"], mesh, rules)
    inner = optimizer_shardings(inner_tx, shapes["inner"], theta, mesh, stacked=population, rules=rules)
    if outer_stacked:
        stacked_eta = jax.tree.map(lambda x: jax.ShapeDtypeStruct((population, *x.shape), x.dtype), shapes["eta"])
        eta_stacked = stacked_param_shardings(rater_axes, stacked_eta, mesh, rules)
        outer = optimizer_shardings(outer_tx, shapes["outer"], eta_stacked, mesh, stacked=population, rules=rules)
    else:
        outer = optimizer_shardings(outer_tx, shapes["outer"], eta, mesh)
    return {"eta": eta, "outer": outer, "theta": theta, "inner": inner}


@dataclass(frozen=True)
class PopulationLayout:
    """Where a population of ``population`` members lives on ``mesh``: decided here, once; the meta
    program only asks (`axes`, `batch_axes`, `put`, `state_shardings`, `describe`)."""

    mesh: Mesh
    rules: Mapping[str, Any]
    population: int

    @property
    def axes(self) -> tuple[str, ...]:
        return population_axes(self.mesh, self.rules, self.population)

    @property
    def member_rules(self) -> dict[str, Any]:
        """The rules inside one member: those of the mesh less the population's axes."""
        return member_rules(self.rules, self.axes)

    def batch_axes(self, batch: int) -> tuple[str, ...]:
        return member_batch_axes(self.mesh, self.rules, self.population, batch)

    def batch_shards(self, batch: int) -> int:
        """Devices a member's batch of ``batch`` rows is split over."""
        axes = self.batch_axes(batch)
        return int(np.prod([self.mesh.shape[a] for a in axes])) if axes else 1

    def put(self, batch: Mapping[str, Any], batch_dim: int) -> dict:
        return put_stacked(batch, self.mesh, self.rules, batch_dim)

    def state_shardings(self, shapes: dict, lm_axes: dict, rater_axes: dict, inner_tx, outer_tx,
                        outer_stacked: bool) -> dict:
        return population_state_shardings(shapes, lm_axes, rater_axes, inner_tx, outer_tx, self.mesh, self.rules,
                                          self.population, outer_stacked)

    def describe(self, batch_sizes: list[int]) -> list[str]:
        """Lines for the user: how the population is split (on more than one device), and a warning
        for each member batch that is not split (`replicated_batch_notes`)."""
        if self.mesh.size == 1:
            return []
        axes = self.axes
        split = f"split over {'*'.join(axes)}" if axes else "not split (no mesh axis of the population rule divides it)"
        lines = [f"{dict(self.mesh.shape)}: population of {self.population} {split}; "
                 f"{members_per_device(self.mesh, self.rules, self.population)} member(s) per device"]
        notes = replicated_batch_notes(self.mesh, self.rules, self.population, batch_sizes)
        return lines + [f"warning: {n}" for n in notes]
