"""The DataRater: a non-causal Transformer that gives one score per packed sequence."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from datarater.config import ModelConfig
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
