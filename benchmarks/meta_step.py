"""Meta-step cost against one LM training step of the same inner model, in one process.

    python benchmarks/meta_step.py [--presets nano micro] [--unrolls 1 2 4 8] [--modes autodiff remat mixed]

For each preset, unroll T and grad mode: the median time of one member's meta-gradient (T inner
Adam steps on softmax-weighted batches, outer loss on a held-out batch, gradient w.r.t. the
rater) as a multiple of the median time of one plain AdamW LM step on a batch of the same shape
(the two called in turn),
and the compiled meta-step's temporary memory (XLA memory analysis) as a fraction of autodiff's.
A configuration whose temporary memory exceeds --max-gib is compiled and measured for memory
but not run.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import jax
import numpy as np
from flax import nnx

from datarater.config import MetaConfig, TrainConfig
from datarater.config.presets import load_preset
from datarater.hostmem import add_benchmark_flag, tune_malloc_unless_disabled
from datarater.meta.core import MetaProblem
from datarater.models.rater import Rater
from datarater.models.transformer import CausalLM
from datarater.train.optimizer import make_optimizer
from datarater.train.step import make_train_step

SHAPES = {"nano": (32, 128), "micro": (32, 256)}  # (batch, seq_len), nano = the peer reference's shape


def random_batch(rng, vocab: int, shape: tuple[int, ...]) -> dict:
    return {"tokens": rng.integers(3, vocab, shape).astype(np.int32), "segment_ids": np.ones(shape, np.int32),
            "positions": np.broadcast_to(np.arange(shape[-1]), shape).astype(np.int32)}


def timed_calls(fns, reps: int, settle: tuple[int, ...] | None = None) -> list[tuple[float, int]]:
    """Median seconds and median minor page faults of ``reps`` calls of each of ``fns``.

    The functions are called in turn (after one warm-up call each), so a ratio of their times is
    taken under the same machine state: on a shared 2-core machine speeds drift by 20-40% within
    minutes. ``settle[k]`` untimed calls of ``fns[k]`` come right before each of its timed ones,
    so that a short step is timed with warm caches, as when it runs back to back in training
    (the nano LM step takes ~10% longer right after a meta-step). Faults show host memory given back
    to the kernel between calls and touched again (see datarater.hostmem); a steady state has
    almost none.
    """
    settle = settle or (0,) * len(fns)
    for fn in fns:
        jax.block_until_ready(fn())
    times, faults = [[] for _ in fns], [[] for _ in fns]
    for _ in range(reps):
        for fn, untimed, ts, fs in zip(fns, settle, times, faults, strict=True):
            for _ in range(untimed):
                jax.block_until_ready(fn())
            f, t = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
            jax.block_until_ready(fn())
            ts.append(time.perf_counter() - t)
            fs.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f)
    return [(statistics.median(ts), int(statistics.median(fs))) for ts, fs in zip(times, faults, strict=True)]


def run_preset(preset: str, unrolls: list[int], modes: list[str], reps: int, max_gib: float, unrolled_max: int) -> None:
    cfg = load_preset(preset)
    batch, seq = SHAPES[preset]
    rng = np.random.default_rng(0)
    lm, rater = CausalLM(cfg, rngs=nnx.Rngs(0)), Rater(cfg, rngs=nnx.Rngs(1))
    lm_g, rater_g = nnx.split(lm)[0], nnx.split(rater)[0]
    theta = nnx.to_pure_dict(nnx.state(lm, nnx.Param))
    eta = nnx.to_pure_dict(nnx.state(rater, nnx.Param))
    tx = make_optimizer(TrainConfig(warmup_steps=0), eps_root=1e-8)
    opt = tx.init(theta)

    lm_step = jax.jit(make_train_step(lm_g, tx))
    one = jax.device_put(random_batch(rng, cfg.vocab_size, (batch, seq)))
    run_lm = lambda: lm_step(theta, opt, one)
    print(f"\n{preset}: batch {batch} x seq {seq}; T <= {unrolled_max} unrolled, longer T a loop; each meta-step"
          " timed in turn with the LM step (warm: two untimed LM steps before each timed one)")
    print(f"{'T':>3} {'mode':<9} {'meta-step (ms)':>15} {'LM step (ms)':>13} {'x LM step':>10} {'temp memory (MiB)':>18}"
          f" {'vs autodiff':>12} {'page faults':>12}")
    held = jax.device_put(random_batch(rng, cfg.vocab_size, (batch, seq)))
    for unroll in unrolls:
        inner = jax.device_put(random_batch(rng, cfg.vocab_size, (unroll, batch, seq)))
        base_mem = None
        for mode in modes:
            problem = MetaProblem(lm_g, rater_g, tx, mode, scan_unroll=unroll <= unrolled_max)
            compiled = jax.jit(problem.meta_grad).lower(eta, theta, opt, inner, held).compile()
            mem = compiled.memory_analysis().temp_size_in_bytes
            base_mem = mem if mode == "autodiff" else base_mem
            rel = f"{mem / base_mem:.3f}" if base_mem else "-"
            if mem > max_gib * 2**30:
                print(f"{unroll:>3} {mode:<9} {'(not run)':>15} {'':>13} {'':>10} {mem / 2**20:>18,.0f} {rel:>12}")
                continue
            run_meta = lambda c=compiled, i=inner: c(eta, theta, opt, i, held)
            (t, faults), (t_lm, _) = timed_calls([run_meta, run_lm], reps, settle=(0, 2))
            print(f"{unroll:>3} {mode:<9} {t * 1000:>15.1f} {t_lm * 1000:>13.1f} {t / t_lm:>10.2f} {mem / 2**20:>18,.0f}"
                  f" {rel:>12} {faults:>12,}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["nano", "micro"], choices=sorted(SHAPES))
    ap.add_argument("--unrolls", nargs="+", type=int, default=[1, 2, 4, 8])
    ap.add_argument("--modes", nargs="+", default=["autodiff", "remat", "mixed"])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--max-gib", type=float, default=8.0)
    ap.add_argument("--unrolled-max", type=int, default=MetaConfig().unrolled_max,
                    help="T up to this runs unrolled in the compiled program, longer T as a loop (meta.unrolled_max)")
    add_benchmark_flag(ap)
    args = ap.parse_args()
    malloc_tuned = tune_malloc_unless_disabled(args)
    print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}; host malloc tuning {'on' if malloc_tuned else 'off'}")
    for preset in args.presets:
        run_preset(preset, args.unrolls, args.modes, args.reps, args.max_gib, args.unrolled_max)


if __name__ == "__main__":
    main()
