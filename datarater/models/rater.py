"""The DataRater: a non-causal Transformer that gives one score per packed sequence (and its loader)."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from datarater.artifacts import RATER_DIR, has_rater, read_run_section, restore_rater
from datarater.config import ModelConfig
from datarater.errors import UserError
from datarater.models.layers import param
from datarater.models.transformer import Trunk


class Rater(nnx.Module):
    """Bidirectional trunk, mean-pooled over valid (non-padding) tokens, then a linear head."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.trunk = Trunk(cfg, causal=False, rngs=rngs)
        self.head = param(rngs, (cfg.d_model,), ("embed",), cfg.init_std, jnp.float32)
        self.bias = nnx.Param(jnp.zeros((), jnp.float32), logical_axes=())

    def __call__(self, tokens: jax.Array, segment_ids: jax.Array, positions: jax.Array) -> jax.Array:
        """Scores ``float32 [B]``; a row with no valid token scores 0."""
        h = self.trunk(tokens, segment_ids, positions).astype(jnp.float32)
        valid = (segment_ids != 0).astype(jnp.float32)[..., None]
        pooled = jnp.sum(h * valid, axis=1) / jnp.maximum(jnp.sum(valid, axis=1), 1.0)
        return pooled @ self.head[...] + self.bias[...]


def load_rater(run_dir: str | Path) -> tuple[Rater, ModelConfig]:
    """``(Rater module, config)`` of a finished meta-training run directory."""
    if not has_rater(run_dir):
        raise UserError(f"{run_dir} is not a finished meta-training run (no config.yaml or {RATER_DIR}/)")
    cfg = read_run_section(run_dir, "rater", ModelConfig)
    abstract = nnx.eval_shape(lambda: Rater(cfg, rngs=nnx.Rngs(0)))
    graphdef, _ = nnx.split(abstract)
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), nnx.to_pure_dict(nnx.state(abstract, nnx.Param)))
    return nnx.merge(graphdef, restore_rater(run_dir, target)), cfg
