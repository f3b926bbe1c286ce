"""The Chinchilla-family Transformer: a causal LM, and the same trunk without the causal mask.

Inputs are packed batches: ``tokens``, ``segment_ids`` (0 = padding, one id per document piece)
and ``positions`` (position within the piece, for rotary embeddings), each ``int32 [B, T]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from datarater.config import ModelConfig
from datarater.models.layers import Block, RMSNorm, attention_mask, dtype_of, param
from datarater.models.sharding import constrain


class Trunk(nnx.Module):
    """Token embedding, ``n_layers`` pre-norm blocks and a final RMSNorm."""

    def __init__(self, cfg: ModelConfig, causal: bool, rngs: nnx.Rngs):
        pdt = dtype_of(cfg.param_dtype)
        self.embed = param(rngs, (cfg.vocab_size, cfg.d_model), ("vocab", "embed"), 1.0, pdt)
        self.blocks = nnx.List([Block(cfg, causal, rngs) for _ in range(cfg.n_layers)])
        self.final_norm = RMSNorm(cfg.d_model, cfg.norm_eps, pdt)
        self.dtype = dtype_of(cfg.dtype)
        self.remat = cfg.remat
        self.causal = causal

    def __call__(self, tokens: jax.Array, segment_ids: jax.Array, positions: jax.Array) -> jax.Array:
        # `constrain` keeps the hidden states batch-split under FSDP (identity unless a caller
        # traces inside `parallel.activations.shard_activations`).
        x = constrain(jnp.take(self.embed[...], tokens, axis=0).astype(self.dtype))
        mask = attention_mask(segment_ids, self.causal)  # once, shared by every layer
        for block in self.blocks:
            if self.remat:
                x = nnx.remat(lambda blk, h: blk(h, mask, positions))(block, x)
            else:
                x = block(x, mask, positions)
            x = constrain(x)
        return self.final_norm(x)


class CausalLM(nnx.Module):
    """Decoder-only LM: trunk with a causal mask and an untied output projection."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.trunk = Trunk(cfg, causal=True, rngs=rngs)
        self.head = param(rngs, (cfg.d_model, cfg.vocab_size), ("embed", "vocab"), cfg.init_std, dtype_of(cfg.param_dtype))

    def __call__(self, tokens: jax.Array, segment_ids: jax.Array, positions: jax.Array) -> jax.Array:
        """Logits ``float32 [B, T, V]`` for the next token at every position."""
        x = self.trunk(tokens, segment_ids, positions)
        b, t, d = x.shape
        logits = jnp.dot(x.reshape(b * t, d), self.head[...].astype(x.dtype), preferred_element_type=jnp.float32)
        return constrain(logits).reshape(b, t, -1)


def next_token_targets(tokens: jax.Array, segment_ids: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Targets ``[B, T-1]`` and their mask: position t predicts t+1 inside the same document piece."""
    targets = tokens[:, 1:]
    mask = (segment_ids[:, 1:] == segment_ids[:, :-1]) & (segment_ids[:, 1:] != 0)
    return targets, mask


def sequence_losses(model: CausalLM, batch: dict) -> tuple[jax.Array, jax.Array]:
    """Per-sequence next-token NLL summed over its tokens, and its token count: ``[B]`` each.

    This is ``l(x; theta)`` of docs/method.md, "Meta-training".
    """
    logits = model(batch["tokens"], batch["segment_ids"], batch["positions"])[:, :-1]
    targets, mask = next_token_targets(batch["tokens"], batch["segment_ids"])
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    mask = mask.astype(jnp.float32)
    return jnp.sum(nll * mask, axis=1), jnp.sum(mask, axis=1)


def summed_nll(model: CausalLM, batch: dict) -> tuple[jax.Array, jax.Array]:
    """Next-token NLL summed over the batch, and the number of predicted tokens: a mean over
    tokens is their ratio, also when the sums are added up over microbatches first."""
    nll, count = sequence_losses(model, batch)
    return jnp.sum(nll), jnp.sum(count)

