"""Device mesh with named axes (data, fsdp, tensor) and logical-axis sharding rules.

Parameters carry logical axis names (``embed``, ``mlp``, ``heads``, ``vocab``, ...); a rule table
(``conf/mesh/*.yaml``) maps each name to mesh axes, MaxText style. The same model code then runs
on one CPU, on 8 emulated CPU devices, or on a pod slice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from datarater.config import MeshConfig
from datarater.errors import UserError

MESH_AXES = ("data", "fsdp", "tensor")


def mesh_shape(cfg: MeshConfig, num_devices: int) -> tuple[int, int, int]:
    """Resolves the ``-1`` axis and checks that the product is the device count."""
    sizes = [cfg.data, cfg.fsdp, cfg.tensor]
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if num_devices % known:
            raise UserError(f"mesh: {num_devices} devices cannot be split with fsdp*tensor*data = {sizes}")
        sizes[sizes.index(-1)] = num_devices // known
    if int(np.prod(sizes)) != num_devices:
        raise UserError(
            f"mesh: data*fsdp*tensor = {sizes[0]}*{sizes[1]}*{sizes[2]} = {int(np.prod(sizes))} "
            f"but there are {num_devices} devices; set one axis to -1 to take the rest"
        )
    return tuple(sizes)  # type: ignore[return-value]


def make_mesh(cfg: MeshConfig, devices: list | None = None) -> Mesh:
    devices = list(jax.devices()) if devices is None else list(devices)
    shape = mesh_shape(cfg, len(devices))
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def _rule_axes(rules: Mapping[str, Any], logical: str | None) -> tuple[str, ...]:
    if logical is None or logical not in rules or rules[logical] is None:
        return ()
    axes = rules[logical]
    return (axes,) if isinstance(axes, str) else tuple(axes)


def logical_to_spec(
    logical_axes: tuple[str | None, ...], shape: tuple[int, ...], rules: Mapping[str, Any], mesh: Mesh
) -> PartitionSpec:
    """PartitionSpec for an array whose dimensions have these logical names.

    A mesh axis is used at most once per array (first dimension wins) and a dimension is only
    split over mesh axes whose product divides it; otherwise that dimension stays replicated.
    """
    used: set[str] = set()
    spec: list[Any] = []
    for name, dim in zip(logical_axes, shape, strict=True):
        axes = tuple(a for a in _rule_axes(rules, name) if a not in used and mesh.shape[a] > 1)
        size = int(np.prod([mesh.shape[a] for a in axes])) if axes else 1
        if not axes or dim % size:
            spec.append(None)
            continue
        used.update(axes)
        spec.append(axes[0] if len(axes) == 1 else axes)
    return PartitionSpec(*spec)


def logical_axes_of(module: nnx.Module) -> dict:
    """Pure dict (same structure as ``nnx.to_pure_dict(nnx.state(module, nnx.Param))``) of axis names."""
    state = nnx.state(module, nnx.Param)
    axes = jax.tree.map(
        lambda v: v.replace(tuple(v.get_metadata().get("logical_axes", (None,) * v.ndim))),
        state,
        is_leaf=lambda x: isinstance(x, nnx.Variable),
    )
    return nnx.to_pure_dict(axes)


def _is_axes(x: Any) -> bool:
    return isinstance(x, tuple) and all(a is None or isinstance(a, str) for a in x)


def param_shardings(axes_tree: dict, shapes_tree: dict, rules: Mapping[str, Any], mesh: Mesh) -> dict:
    """NamedSharding for every parameter, from its logical axes and shape."""
    return jax.tree.map(
        lambda axes, shaped: NamedSharding(mesh, logical_to_spec(axes, shaped.shape, rules, mesh)),
        axes_tree,
        shapes_tree,
        is_leaf=_is_axes,
    )


def batch_sharding(mesh: Mesh, rules: Mapping[str, Any], ndim: int = 2) -> NamedSharding:
    """Sharding of a ``[batch, ...]`` input array: batch over the rule's axes, the rest replicated."""
    axes = tuple(a for a in _rule_axes(rules, "batch") if mesh.shape[a] > 1)
    first = None if not axes else (axes[0] if len(axes) == 1 else axes)
    return NamedSharding(mesh, PartitionSpec(first, *([None] * (ndim - 1))))


def batch_shards(mesh: Mesh, rules: Mapping[str, Any]) -> int:
    return int(np.prod([mesh.shape[a] for a in _rule_axes(rules, "batch")])) if _rule_axes(rules, "batch") else 1


def put_batch(batch: Mapping[str, np.ndarray], mesh: Mesh, rules: Mapping[str, Any]) -> dict:
    """Assembles a global batch from this process's rows (works single- and multi-host)."""
    out = {}
    for k, v in batch.items():
        sharding = batch_sharding(mesh, rules, np.ndim(v))
        out[k] = jax.make_array_from_process_local_data(sharding, np.asarray(v))
    return out
