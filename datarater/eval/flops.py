"""Compute accounting: FLOPs of LM training, rater inference and meta-training.

Conventions (as in the Chinchilla paper, appendix F, without the small non-matmul terms):
- a matrix multiply ``[m, k] @ [k, n]`` costs ``2 m k n`` FLOPs;
- forward FLOPs per token = 2 x dense (matmul) parameters + attention, where attention per layer
  is ``QK^T`` and ``AV``: ``2 * 2 * n_heads * d_head * seq_len``, halved for a causal model
  (a query sees on average half the keys); embedding lookups, norms, softmax and the optimiser
  update are not counted;
- backward = 2 x forward, so training = 3 x forward.
"""

from __future__ import annotations

from dataclasses import astuple
from functools import lru_cache

from datarater.config import MetaConfig, ModelConfig
from datarater.models.presets import attention_flops_per_token, lm_param_counts, lm_train_flops_per_token

# Backward pass through the unrolled inner steps, in units of their forward pass: the VJP of a
# computation costs about twice its forward, and the inner step's forward already contains the
# LM's gradient, whose VJP is a Hessian-vector product (reverse-over-reverse or the MixFlow-MG
# forward-over-reverse product: both ~2x the gradient's cost). remat, and mixed run as a loop,
# recompute inner forwards in the backward pass (`unroll_recompute`).
UNROLL_BACKWARD_FACTOR = 2.0


def unroll_recompute(meta_cfg: MetaConfig) -> float:
    """Fraction of the unrolled inner forward that the meta-gradient computes twice.

    ``remat`` recomputes every step; ``mixed`` none when unrolled (T <= meta.unrolled_max), and
    as a loop the T - 2 steps inside it (`datarater.meta.core` takes the first and last outside;
    the first one's recomputed forward is less than the backward factor counts for it, since it
    needs no Hessian-vector product); ``autodiff`` none.
    """
    t = meta_cfg.unroll
    if meta_cfg.grad_mode == "remat":
        return 1.0
    if meta_cfg.grad_mode == "mixed" and t > meta_cfg.unrolled_max:
        return (t - 2) / t
    return 0.0


@lru_cache(maxsize=64)
def _dense_params(cfg_key: tuple) -> tuple[int, int]:
    """(dense parameters of the causal LM, of which the output head) for a config tuple."""
    counts = lm_param_counts(ModelConfig(*cfg_key))
    return counts.dense, counts.head


def lm_dense_params(cfg: ModelConfig) -> int:
    """Matmul parameters per token of the causal LM (output head included, input embedding not)."""
    return _dense_params(astuple(cfg))[0]


def trunk_dense_params(cfg: ModelConfig) -> int:
    """Matmul parameters per token of the Transformer trunk (attention and MLP of every layer)."""
    dense, head = _dense_params(astuple(cfg))
    return dense - head


def lm_forward_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Forward FLOPs per token of the causal LM: 2 x dense + causal attention."""
    return 2.0 * lm_dense_params(cfg) + attention_flops_per_token(cfg, seq_len, causal=True)


def lm_flops_per_step(model_cfg: ModelConfig, batch: int, seq_len: int) -> float:
    """Training FLOPs of one LM step on ``batch`` sequences of ``seq_len`` tokens."""
    return float(batch) * seq_len * lm_train_flops_per_token(model_cfg, seq_len)


def rater_inference_flops_per_sequence(rater_cfg: ModelConfig, seq_len: int) -> float:
    """Forward FLOPs of the (non-causal) rater on one sequence.

    Per token: 2 x trunk dense parameters + full bidirectional attention (not halved); per
    sequence: the pooled scalar head (2 x d_model).
    """
    per_token = 2.0 * trunk_dense_params(rater_cfg) + attention_flops_per_token(rater_cfg, seq_len, causal=False)
    return seq_len * per_token + 2.0 * rater_cfg.d_model


def oversampled_batch(batch: int, discard: float) -> int:
    """Sequences drawn to keep ``batch`` of them at discard ratio ``discard``: ceil(N / (1 - rho)).

    The curation pipeline's own rule (`datarater.curate.rules.oversampled_size`), so the FLOPs
    counted here are those of the rows the pipeline actually scores.
    """
    from datarater.curate.rules import oversampled_size

    return oversampled_size(batch, discard)


def rater_flops_per_step(rater_cfg: ModelConfig, batch: int, seq_len: int, discard: float) -> float:
    """Rater inference per LM training step: the whole oversampled batch is scored."""
    if discard == 0.0:
        return 0.0
    return oversampled_batch(batch, discard) * rater_inference_flops_per_sequence(rater_cfg, seq_len)


def meta_member_flops(model_cfg: ModelConfig, rater_cfg: ModelConfig, meta_cfg: MetaConfig, seq_len: int) -> dict[str, float]:
    """FLOPs of one population member's meta-gradient, by part (see `meta_step_flops`)."""
    inner_tokens = meta_cfg.inner_batch_size * seq_len
    inner_forward = meta_cfg.unroll * (
        meta_cfg.inner_batch_size * rater_inference_flops_per_sequence(rater_cfg, seq_len)
        + inner_tokens * lm_train_flops_per_token(model_cfg, seq_len)
    )
    heldout_forward = meta_cfg.outer_batch_size * seq_len * lm_forward_flops_per_token(model_cfg, seq_len)
    recompute = unroll_recompute(meta_cfg)
    return {
        "inner_forward": inner_forward,
        "inner_recompute": recompute * inner_forward,
        "inner_backward": UNROLL_BACKWARD_FACTOR * inner_forward,
        "heldout_forward": heldout_forward,
        "heldout_backward": 2.0 * heldout_forward,
    }


def meta_step_flops(model_cfg: ModelConfig, rater_cfg: ModelConfig, meta_cfg: MetaConfig, seq_len: int) -> float:
    """A documented estimate of one meta-step's FLOPs (all population members).

    Per member: ``T = meta.unroll`` inner steps, each a rater forward on the inner batch and an
    LM training step (forward + backward: the weighted gradient) on it; then the LM forward on
    the held-out batch. The meta-gradient costs the backward of all of it: 2 x the held-out
    forward, and ``UNROLL_BACKWARD_FACTOR`` (2) x the unrolled inner forward, plus what is
    recomputed (`unroll_recompute`). So the unroll costs 3x (autodiff, mixed unrolled) to 4x
    (remat) its forward. The outer Adam update and member re-initialisation are ignored.
    """
    return meta_cfg.population * sum(meta_member_flops(model_cfg, rater_cfg, meta_cfg, seq_len).values())


def meta_training_flops(model_cfg: ModelConfig, rater_cfg: ModelConfig, meta_cfg: MetaConfig, seq_len: int,
                        steps: int | None = None) -> float:
    """FLOPs of a whole meta-training run (``meta.steps`` meta-steps unless ``steps`` is given)."""
    n = meta_cfg.steps if steps is None else steps
    return n * meta_step_flops(model_cfg, rater_cfg, meta_cfg, seq_len)
