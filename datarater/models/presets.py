"""Model presets (the YAML files in ``conf/model/``), parameter counts and FLOPs per token."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np
from flax import nnx
from omegaconf import OmegaConf

from datarater.config import ModelConfig
from datarater.errors import UserError
from datarater.paths import conf_dir


def preset_names() -> list[str]:
    return sorted(p.stem for p in (conf_dir() / "model").glob("*.yaml"))


def load_preset(name: str) -> ModelConfig:
    """The ``ModelConfig`` of ``conf/model/<name>.yaml``."""
    path = conf_dir() / "model" / f"{name}.yaml"
    if not path.exists():
        raise UserError(f"unknown model preset '{name}'; available: {', '.join(preset_names())}")
    merged = OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.load(path))
    return OmegaConf.to_object(merged)


@dataclass(frozen=True)
class ParamCounts:
    total: int
    embedding: int  # the input token-embedding table
    head: int  # the output projection (a dense layer: counted as non-embedding)
    norms: int

    @property
    def non_embedding(self) -> int:
        return self.total - self.embedding

    @property
    def dense(self) -> int:
        """Parameters of matrix multiplies per token (non-embedding minus norm scales)."""
        return self.total - self.embedding - self.norms


def path_str(path) -> str:
    """``trunk/blocks/0/attn/wqkv/value`` from a JAX key path."""
    parts = []
    for k in path:
        parts.append(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))))
    return "/".join(parts)


def count_params(module_fn) -> ParamCounts:
    """Counts the parameters of ``module_fn()`` without allocating them (``nnx.eval_shape``)."""
    abstract = nnx.eval_shape(module_fn)
    state = nnx.state(abstract, nnx.Param)
    sizes = {path_str(path): int(np.prod(leaf.shape)) for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]}
    total = sum(sizes.values())
    embedding = sum(v for k, v in sizes.items() if k.startswith("trunk/embed"))
    head = sum(v for k, v in sizes.items() if k.startswith("head"))
    norms = sum(v for k, v in sizes.items() if "norm" in k)
    return ParamCounts(total=total, embedding=embedding, head=head, norms=norms)


def lm_param_counts(cfg: ModelConfig) -> ParamCounts:
    from datarater.models.transformer import CausalLM

    return count_params(lambda: CausalLM(cfg, rngs=nnx.Rngs(0)))


def attention_flops_per_token(cfg: ModelConfig, seq_len: int, causal: bool = True) -> float:
    """Forward FLOPs per token of the score and value products (QK^T and AV), causal halved."""
    full = 2 * 2 * cfg.n_layers * cfg.n_heads * cfg.d_head * seq_len
    return full / 2 if causal else full


def lm_train_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token: 6 x dense parameters + 3 x forward attention (causal halved)."""
    dense = lm_param_counts(cfg).dense
    return 6.0 * dense + 3.0 * attention_flops_per_token(cfg, seq_len, causal=True)
