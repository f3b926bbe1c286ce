"""Rater scoring throughput as a multiple of LM training throughput, same preset, same process.

    python benchmarks/score.py [--presets nano micro] [--reps 10] [--score-batches 8 16 32 64]

For each preset: tokens/s of the jitted AdamW training step of the causal LM (``conf/model``,
the preset's CPU batch) and tokens/s of `DataraterCurator.score_batch` with the rater of the
same name (``conf/rater``) at each scoring batch size (``score.batch_size``), host arrays in and
scores out, as `datarater score` calls it. All are timed in alternation in one process (median
over reps after compilation), so load on the machine hits them alike. The issue's target:
scoring >= 3x the training tokens/s, at the best scoring batch size.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np
from flax import nnx
from lm_step import SHAPES, compiled_lm_step, random_batch  # benchmarks/ is on sys.path when run as a script
from omegaconf import OmegaConf

from datarater.config import ModelConfig
from datarater.config.presets import load_preset
from datarater.curate.curators import DataraterCurator
from datarater.hostmem import add_benchmark_flag, tune_malloc_unless_disabled
from datarater.models.flops import lm_train_flops_per_token
from datarater.models.rater import Rater
from datarater.paths import conf_dir


def rater_preset(name: str) -> ModelConfig:
    path = conf_dir() / "rater" / f"{name}.yaml"
    if not path.exists():
        return load_preset(name)
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.load(path)))


def interleaved_seconds(fns: dict, reps: int) -> dict[str, float]:
    """Median seconds of each callable, timed in alternation so that load on the machine hits all alike."""
    for fn in fns.values():
        for _ in range(3):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def train_fn(preset: str):
    """One LM training step on a fixed batch, and (tokens, FLOPs per token) of a step."""
    step, params, opt_state, batch, cfg = compiled_lm_step(preset)
    batch_size, seq = SHAPES[preset]
    state = {"params": params, "opt": opt_state}

    def run():
        state["params"], state["opt"], m = step(state["params"], state["opt"], batch)
        jax.block_until_ready(m)

    return run, batch_size * seq, lm_train_flops_per_token(cfg, seq)


def score_fn(preset: str, score_batch: int):
    """One scoring call of the rater on host arrays, and (tokens, FLOPs per token) of a call."""
    cfg = rater_preset(preset)
    _, seq = SHAPES[preset]
    curator = DataraterCurator(Rater(cfg, rngs=nnx.Rngs(0)), cfg, seq)
    batch = random_batch(np.random.default_rng(1), cfg.vocab_size, score_batch, seq)
    return (lambda: curator.score_batch(batch)), score_batch * seq, curator.flops_per_sequence / seq


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["nano", "micro"], choices=sorted(SHAPES))
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--score-batches", nargs="+", type=int, default=[8, 16, 32, 64],
                    help="sequences per scoring call (score.batch_size) to time")
    add_benchmark_flag(ap)
    args = ap.parse_args()
    malloc_tuned = tune_malloc_unless_disabled(args)
    print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}; host malloc tuning {'on' if malloc_tuned else 'off'}")
    print(f"{'preset':<7} {'seq':>5} {'batch':>6} {'train tok/s':>12} {'score seq/s':>12} {'score tok/s':>12} "
          f"{'ratio':>6} {'FLOP ratio':>10}")
    best = {}
    for preset in args.presets:
        train, train_tokens, train_flops = train_fn(preset)
        fns, tokens = {"train": train}, {"train": train_tokens}
        for b in args.score_batches:
            fns[b], tokens[b], score_flops = score_fn(preset, b)
        dt = interleaved_seconds(fns, args.reps)
        train_tps = train_tokens / dt["train"]
        for b in args.score_batches:
            score_tps = tokens[b] / dt[b]
            ratio = score_tps / train_tps
            best[preset] = max(best.get(preset, (0.0, b)), (ratio, b))
            print(f"{preset:<7} {SHAPES[preset][1]:>5} {b:>6} {train_tps:>12,.0f} {b / dt[b]:>12,.1f} "
                  f"{score_tps:>12,.0f} {ratio:>5.2f}x {train_flops / score_flops:>9.2f}x")
    shown = ", ".join(f"{p} {r:.2f}x (batch {b})" for p, (r, b) in best.items())
    print(f"scoring / training tokens per second, best scoring batch: {shown}; target >= 3x. "
          "FLOP ratio = training FLOPs per token / scoring FLOPs per token")


if __name__ == "__main__":
    main()
