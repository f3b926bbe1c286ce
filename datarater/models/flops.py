"""The one FLOP model: parameter counts and the FLOPs of LM training, rater inference and meta-training.

Conventions (as in the Chinchilla paper, appendix F, without the small non-matmul terms):
- a matrix multiply ``[m, k] @ [k, n]`` costs ``2 m k n`` FLOPs;
- forward FLOPs per token = 2 x dense (matmul) parameters + attention, where attention per layer
  is ``QK^T`` and ``AV``: ``2 * 2 * n_heads * d_head * seq_len``, halved for a causal model
  (a query sees on average half the keys); embedding lookups, norms, softmax, pooling and the
  optimiser update are not counted;
- backward = 2 x forward, so training = 3 x forward.

Callers that curate pass the number of rows scored (`datarater.curate.rules.oversampled_size`);
this module does not know the curation rules.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass
from functools import lru_cache

import jax
import numpy as np
from flax import nnx

from datarater.config import MetaConfig, ModelConfig

# ---------------------------------------------------------------------------------------------
# Parameter counts


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


@lru_cache(maxsize=64)
def _dense_params(cfg_key: tuple) -> tuple[int, int]:
    """(dense parameters of the causal LM, of which the output head) for a config tuple."""
    counts = lm_param_counts(ModelConfig(*cfg_key))
    return counts.dense, counts.head


def lm_dense_params(cfg: ModelConfig) -> int:
    """Matmul parameters per token of the causal LM (output head included, input embedding not)."""
    return _dense_params(astuple(cfg))[0]


def trunk_dense_params(cfg: ModelConfig) -> int:
    """Matmul parameters per token of the Transformer trunk (attention and MLP of every layer);
    the same for the causal LM's trunk and the rater's bidirectional one."""
    dense, head = _dense_params(astuple(cfg))
    return dense - head


# ---------------------------------------------------------------------------------------------
# Forward and training FLOPs


def attention_flops_per_token(cfg: ModelConfig, seq_len: int, causal: bool = True) -> float:
    """Forward FLOPs per token of the score and value products (QK^T and AV), causal halved."""
    full = 2 * 2 * cfg.n_layers * cfg.n_heads * cfg.d_head * seq_len
    return full / 2 if causal else full


def lm_forward_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Forward FLOPs per token of the causal LM: 2 x dense + causal attention."""
    return 2.0 * lm_dense_params(cfg) + attention_flops_per_token(cfg, seq_len, causal=True)


def lm_forward_flops_per_sequence(cfg: ModelConfig, seq_len: int) -> float:
    """Forward FLOPs of the causal LM on one sequence (what a perplexity curator spends per row)."""
    return float(seq_len) * lm_forward_flops_per_token(cfg, seq_len)


def lm_train_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token: 6 x dense parameters + 3 x forward attention (causal halved)."""
    return 6.0 * lm_dense_params(cfg) + 3.0 * attention_flops_per_token(cfg, seq_len, causal=True)


def lm_flops_per_step(model_cfg: ModelConfig, batch: int, seq_len: int) -> float:
    """Training FLOPs of one LM step on ``batch`` sequences of ``seq_len`` tokens."""
    return float(batch) * seq_len * lm_train_flops_per_token(model_cfg, seq_len)


def rater_inference_flops_per_sequence(rater_cfg: ModelConfig, seq_len: int) -> float:
    """Forward FLOPs of the (non-causal) rater on one sequence: the score of one row.

    Per token: 2 x trunk dense parameters + full bidirectional attention (not halved). Per
    sequence: the scalar head, a dot product of the mean-pooled vector with ``d_model`` weights
    (2 x d_model; `datarater.models.rater.Rater` applies it once to the pooled vector, not per
    token; the pooling and the bias are element-wise and not counted).
    """
    per_token = 2.0 * trunk_dense_params(rater_cfg) + attention_flops_per_token(rater_cfg, seq_len, causal=False)
    return seq_len * per_token + 2.0 * rater_cfg.d_model


def rater_flops_per_step(rater_cfg: ModelConfig, rows_scored: int, seq_len: int) -> float:
    """Rater inference per LM training step: ``rows_scored`` rows, the whole drawn batch (the
    caller's `datarater.curate.rules.oversampled_size`, or 0 when nothing is filtered)."""
    return rows_scored * rater_inference_flops_per_sequence(rater_cfg, seq_len)


# ---------------------------------------------------------------------------------------------
# Meta-training

# Backward pass through the unrolled inner steps, in units of their forward pass: the VJP of a
# computation costs about twice its forward, and the inner step's forward already contains the
# LM's gradient, whose VJP is a Hessian-vector product (reverse-over-reverse or the MixFlow-MG
# forward-over-reverse product: both ~2x the gradient's cost). remat, and mixed run as a loop,
# recompute inner forwards in the backward pass (`unroll_recompute`).
UNROLL_BACKWARD_FACTOR = 2.0


def unroll_recompute(meta_cfg: MetaConfig) -> float:
    """Fraction of the unrolled inner LM steps whose forward the meta-gradient computes twice.

    ``remat`` recomputes every step; ``mixed`` none when unrolled (T <= meta.unrolled_max), and
    as a loop the T - 2 steps inside it (`datarater.meta.core` takes the first and last outside),
    or its one step when T = 1 (a loop of one step that keeps no linearisation); ``autodiff`` none.
    """
    t = meta_cfg.unroll
    if meta_cfg.grad_mode == "remat":
        return 1.0
    if meta_cfg.grad_mode == "mixed" and t > meta_cfg.unrolled_max:
        return (t - 2) / t if t > 1 else 1.0
    return 0.0


def first_step_outside_a_loop(meta_cfg: MetaConfig) -> bool:
    """Whether the first inner step runs outside a loop, so that its backward pass computes only the
    weights' cotangents (its theta is not differentiated): unrolled, or the autodiff / mixed loop
    of T > 1 steps."""
    return meta_cfg.unroll <= meta_cfg.unrolled_max or (meta_cfg.grad_mode != "remat" and meta_cfg.unroll > 1)


def rater_recomputed(meta_cfg: MetaConfig) -> bool:
    """Whether the rater's forward runs twice: as a checkpointed map over the T batches, which
    `MetaProblem.batch_weights` uses for a remat or mixed loop of T > 1 steps."""
    return meta_cfg.grad_mode != "autodiff" and meta_cfg.unroll > max(meta_cfg.unrolled_max, 1)


def meta_member_flops(model_cfg: ModelConfig, rater_cfg: ModelConfig, meta_cfg: MetaConfig, seq_len: int) -> dict[str, float]:
    """FLOPs of one population member's share of a meta-step, by part (see `meta_step_flops`)."""
    f = meta_cfg.inner_batch_size * seq_len * lm_forward_flops_per_token(model_cfg, seq_len)  # LM forward, inner batch
    r = meta_cfg.inner_batch_size * rater_inference_flops_per_sequence(rater_cfg, seq_len)  # rater forward, inner batch
    f_out = meta_cfg.outer_batch_size * seq_len * lm_forward_flops_per_token(model_cfg, seq_len)
    t, k = meta_cfg.unroll, meta_cfg.plain_inner_steps
    return {
        "plain_steps": k * (r + 3 * f),
        "inner_forward": t * (r + 3 * f),
        "inner_recompute": unroll_recompute(meta_cfg) * t * 3 * f + (t * r if rater_recomputed(meta_cfg) else 0.0),
        "inner_backward": UNROLL_BACKWARD_FACTOR * t * (r + 3 * f) - (4 * f if first_step_outside_a_loop(meta_cfg) else 0.0),
        "heldout_forward": f_out,
        "heldout_backward": 2.0 * f_out,
    }


def meta_step_flops(model_cfg: ModelConfig, rater_cfg: ModelConfig, meta_cfg: MetaConfig, seq_len: int) -> float:
    """A documented estimate of one meta-step's FLOPs (all population members).

    Per member, with ``F`` the LM's forward on an inner batch, ``R`` the rater's and ``F_o`` the
    LM's forward on the held-out batch: ``K = meta.plain_inner_steps`` rater-weighted steps that
    are not differentiated (``K (R + 3F)``); ``T = meta.unroll`` inner steps, each a rater forward
    and an LM training step (``T (R + 3F)``); the held-out loss, forward and backward (``3 F_o``).
    The meta-gradient's backward through the unroll costs ``UNROLL_BACKWARD_FACTOR`` (2) x its
    forward, less ``4F`` for the first step when it runs outside a loop (its theta is not
    differentiated: the weights' cotangents alone, ``2F`` instead of ``6F``), plus what is
    recomputed (`unroll_recompute`, `rater_recomputed`). Unrolled, per member: ``autodiff`` and
    ``mixed (9T-4) F``, ``remat (12T-4) F``, each ``+ 3 T R + 3 F_o + K (R + 3F)``; `datarater
    plan` checks this against XLA's cost analysis (tests/test_plan.py). Not counted: what
    microbatching (``meta.microbatch_rows``) recomputes (checkpointed slices; ``mixed`` then keeps
    no linearisation either), the outer Adam update and member re-initialisation.
    """
    return meta_cfg.population * sum(meta_member_flops(model_cfg, rater_cfg, meta_cfg, seq_len).values())


def meta_training_flops(model_cfg: ModelConfig, rater_cfg: ModelConfig, meta_cfg: MetaConfig, seq_len: int,
                        steps: int | None = None) -> float:
    """FLOPs of a whole meta-training run (``meta.steps`` meta-steps unless ``steps`` is given)."""
    n = meta_cfg.steps if steps is None else steps
    return n * meta_step_flops(model_cfg, rater_cfg, meta_cfg, seq_len)
