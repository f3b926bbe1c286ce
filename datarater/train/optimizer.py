"""The LM optimiser: AdamW with linear warm-up, cosine decay and global-norm clipping.

The meta-trainer's inner loop uses the same transformation (docs/method.md, "Meta-training"), so it is
built here once, from a ``TrainConfig``.
"""

from __future__ import annotations

import jax
import optax

from datarater.config import TrainConfig


def lr_schedule(cfg: TrainConfig) -> optax.Schedule:
    warmup = min(cfg.warmup_steps, max(cfg.steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=cfg.lr,
        warmup_steps=warmup,
        decay_steps=max(cfg.steps, warmup + 1),
        end_value=cfg.lr * cfg.min_lr_ratio,
    )


def decay_mask(params):
    """Weight decay on matrices only (not on norm scales)."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(cfg: TrainConfig, eps_root: float = 0.0) -> optax.GradientTransformation:
    """AdamW. ``eps_root > 0`` keeps Adam differentiable at zero second moment (meta-gradients)."""
    parts = []
    if cfg.clip_norm > 0:
        parts.append(optax.clip_by_global_norm(cfg.clip_norm))
    parts.append(
        optax.adamw(
            learning_rate=lr_schedule(cfg),
            b1=cfg.b1,
            b2=cfg.b2,
            eps=cfg.eps,
            eps_root=eps_root,
            weight_decay=cfg.weight_decay,
            mask=decay_mask,
        )
    )
    return optax.chain(*parts)
