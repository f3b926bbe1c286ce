"""LM training-step throughput and its fraction of the matmul peak measured in this process.

    python benchmarks/lm_step.py [--presets nano micro] [--reps 10]

For each preset: tokens/s of the jitted AdamW step (median over reps, after compilation) and
model FLOP/s (6 x dense params + causal attention, per token) as a fraction of an f32 2048^2
matmul's FLOP/s timed in the same process right before.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np
from flax import nnx

from datarater.config import TrainConfig
from datarater.config.presets import load_preset
from datarater.hostmem import add_benchmark_flag, tune_malloc_unless_disabled
from datarater.models.flops import lm_train_flops_per_token
from datarater.models.transformer import CausalLM
from datarater.train.metrics import measure_matmul_peak
from datarater.train.optimizer import make_optimizer
from datarater.train.step import make_train_step

SHAPES = {"nano": (32, 128), "micro": (32, 256)}  # (batch, seq_len) of the CPU presets


def random_batch(rng, vocab: int, batch: int, seq: int) -> dict:
    seg = np.ones((batch, seq), np.int32)
    seg[:, seq // 2 :] = 2  # two packed documents per row
    pos = np.concatenate([np.arange(seq // 2), np.arange(seq - seq // 2)])
    return {"tokens": rng.integers(3, vocab, (batch, seq)).astype(np.int32), "segment_ids": seg,
            "positions": np.tile(pos, (batch, 1)).astype(np.int32)}


def compiled_lm_step(preset: str):
    """The preset's jitted AdamW step compiled for its CPU shape: ``(step, params, opt_state, batch, cfg)``."""
    cfg = load_preset(preset)
    batch_size, seq = SHAPES[preset]
    model = CausalLM(cfg, rngs=nnx.Rngs(0))
    graphdef, _ = nnx.split(model)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    tx = make_optimizer(TrainConfig())
    opt_state = tx.init(params)
    batch = jax.device_put(random_batch(np.random.default_rng(0), cfg.vocab_size, batch_size, seq))
    step = jax.jit(make_train_step(graphdef, tx), donate_argnums=(0, 1)).lower(params, opt_state, batch).compile()
    return step, params, opt_state, batch, cfg


def time_lm_step(preset: str, reps: int) -> dict:
    step, params, opt_state, batch, cfg = compiled_lm_step(preset)
    batch_size, seq = SHAPES[preset]
    for _ in range(3):
        params, opt_state, m = step(params, opt_state, batch)
    jax.block_until_ready(m)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        params, opt_state, m = step(params, opt_state, batch)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t)
    dt = statistics.median(times)
    tokens = batch_size * seq
    return {"preset": preset, "step_s": dt, "tokens_per_s": tokens / dt,
            "flops_per_s": tokens * lm_train_flops_per_token(cfg, seq) / dt}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["nano", "micro"], choices=sorted(SHAPES))
    ap.add_argument("--reps", type=int, default=10)
    add_benchmark_flag(ap)
    args = ap.parse_args()
    malloc_tuned = tune_malloc_unless_disabled(args)
    peak = measure_matmul_peak(2048, reps=10)
    print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}; host malloc tuning {'on' if malloc_tuned else 'off'}; measured f32 matmul peak {peak / 1e9:.1f} GFLOP/s")
    print(f"{'preset':<8} {'batch x seq':>12} {'step (s)':>9} {'tokens/s':>10} {'GFLOP/s':>9} {'of peak':>8}")
    for preset in args.presets:
        r = time_lm_step(preset, args.reps)
        b, s = SHAPES[preset]
        print(f"{preset:<8} {f'{b} x {s}':>12} {r['step_s']:>9.4f} {r['tokens_per_s']:>10,.0f} "
              f"{r['flops_per_s'] / 1e9:>9.1f} {r['flops_per_s'] / peak:>8.1%}")


if __name__ == "__main__":
    main()
