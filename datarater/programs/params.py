"""`datarater params`: parameter counts and training FLOPs per token of a model preset (nothing is allocated)."""

from __future__ import annotations

from datarater.config import ParamsProgram
from datarater.console import result
from datarater.models.flops import lm_param_counts, lm_train_flops_per_token


def run(prog: ParamsProgram) -> dict:
    m = prog.model
    c = lm_param_counts(m)
    result("\n".join([
        f"model {m.name}: d_model={m.d_model} d_ff={m.d_ff} d_head={m.d_head} heads={m.n_heads} layers={m.n_layers} "
        f"vocab={m.vocab_size}",
        f"  total parameters          {c.total:>15,}",
        f"  input embedding           {c.embedding:>15,}",
        f"  non-embedding             {c.non_embedding:>15,}  ({c.non_embedding / 1e6:.1f}M; output head {c.head:,} included)",
        f"  dense (matmul) parameters {c.dense:>15,}",
        f"  training FLOPs per token at seq 2048: {lm_train_flops_per_token(m, 2048):.4g}",
    ]))
    return {"total": c.total, "non_embedding": c.non_embedding}
