"""Full-size LM step: tokens/s and MFU, and the meta-step's multiple of it, on one accelerator.

    python benchmarks/full_size.py [--model chinchilla_50m] [--rater rater_50m] [--batch 16]
        [--seq 2048] [--dtype bfloat16] [--unroll 2] [--mode mixed] [--microbatch-rows 0]

The figures issue 7 asks of a GPU, in one process:

1. the jitted AdamW step of the LM preset (bf16 compute, float32 master weights by default):
   median step time over --reps, tokens/s, and MFU = model FLOPs (6N + causal attention per
   token, `lm_train_flops_per_token`) per second over the device's dense bf16 peak from its data
   sheet (`PEAK_FLOPS_BY_DEVICE_KIND`; --peak-tflops overrides it). The fraction of a large
   matmul timed here in the compute dtype is printed beside it: what the chip reaches in practice.
2. one member's meta-gradient (T = --unroll inner steps on rater-weighted batches of the same
   shape, outer loss on a held-out batch, gradient w.r.t. the rater) timed in turn with the LM
   step: its multiple of the LM step, and its own MFU on the formula FLOPs (`meta_member_flops`).

On CPU it runs too (e.g. ``--model nano --rater nano --batch 8 --seq 128``), with the peak
taken from a float32 matmul timed here. A bare GPU image with JAX, flax and optax lacks
omegaconf (used to read the presets): ``benchmarks/gpu_site.sh`` copies it into ``.gpu_site/``
(git-ignored) to carry, then ``PYTHONPATH=.gpu_site:. python3 benchmarks/full_size.py`` there.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import jax
import numpy as np
from flax import nnx
from meta_step import random_batch, timed_calls  # benchmarks/ is on sys.path when run as a script
from score import rater_preset

from datarater.config import MetaConfig, ModelConfig, TrainConfig
from datarater.config.presets import load_preset
from datarater.errors import UserError
from datarater.hostmem import add_benchmark_flag, tune_malloc_unless_disabled
from datarater.meta.core import MetaProblem
from datarater.models.flops import lm_train_flops_per_token, meta_member_flops
from datarater.models.rater import Rater
from datarater.models.transformer import CausalLM
from datarater.train.metrics import measure_matmul_peak, peak_flops_per_device
from datarater.train.microbatch import microbatch_count
from datarater.train.optimizer import make_optimizer
from datarater.train.step import make_train_step


def with_compute(cfg: ModelConfig, args: argparse.Namespace) -> ModelConfig:
    """The preset with the command line's compute settings."""
    return dataclasses.replace(cfg, dtype=args.dtype, param_dtype=args.param_dtype, remat=args.remat,
                               attention_chunk=args.attention_chunk)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="chinchilla_50m")
    ap.add_argument("--rater", default="rater_50m", help="conf/rater/<name>.yaml or a model preset")
    ap.add_argument("--batch", type=int, default=16, help="rows per step (LM, and each inner and held-out batch)")
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"], help="compute dtype")
    ap.add_argument("--param-dtype", default="float32", choices=["bfloat16", "float32"])
    ap.add_argument("--remat", action="store_true", help="rematerialise each block (model.remat)")
    ap.add_argument("--attention-chunk", type=int, default=0, help="queries per attention chunk (0 = all)")
    ap.add_argument("--microbatch-rows", type=int, default=0, help="rows per microbatch, LM and meta (0 = whole batch)")
    ap.add_argument("--unroll", type=int, default=2, help="inner steps T of the meta-step (0 = no meta-step)")
    ap.add_argument("--mode", default="mixed", choices=["autodiff", "remat", "mixed"], help="meta.grad_mode")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--peak-tflops", type=float, default=0.0, help="the device's peak (0 = its data sheet's)")
    ap.add_argument("--matmul", type=int, default=0, help="side of the matmul timed for the practical peak (0 = 8192 on accelerators, 2048 on CPU)")
    add_benchmark_flag(ap)
    args = ap.parse_args()
    tune_malloc_unless_disabled(args)

    if args.attention_chunk < 0 or args.microbatch_rows < 0 or args.unroll < 0 or args.batch < 1 or args.seq < 2:
        ap.error("--attention-chunk, --microbatch-rows and --unroll must be >= 0, --batch >= 1, --seq >= 2")
    cfg, rater_cfg = with_compute(load_preset(args.model), args), with_compute(rater_preset(args.rater), args)
    cpu = jax.devices()[0].platform == "cpu"
    side = args.matmul or (2048 if cpu else 8192)
    practical = measure_matmul_peak(side, reps=10, dtype="float32" if cpu else args.dtype)
    if args.peak_tflops:
        peak, source = args.peak_tflops * 1e12, "--peak-tflops"
    else:
        peak, source = peak_flops_per_device()
    print(f"device: {jax.devices()[0].device_kind}; peak {peak / 1e12:.1f} TFLOP/s ({source}); "
          f"{side}^3 {'float32' if cpu else args.dtype} matmul measured {practical / 1e12:.1f} TFLOP/s")
    micro = microbatch_count("--microbatch-rows", args.batch, 1, args.microbatch_rows)

    rng = np.random.default_rng(0)
    lm = CausalLM(cfg, rngs=nnx.Rngs(0))
    lm_g = nnx.split(lm)[0]
    theta = nnx.to_pure_dict(nnx.state(lm, nnx.Param))
    tx = make_optimizer(TrainConfig(warmup_steps=0), eps_root=1e-8)
    opt = tx.init(theta)
    one = jax.device_put(random_batch(rng, cfg.vocab_size, (args.batch, args.seq)))
    lm_step = jax.jit(make_train_step(lm_g, tx, micro)).lower(theta, opt, one).compile()
    run_lm = lambda: lm_step(theta, opt, one)  # not donated: the same inputs every call

    tokens = args.batch * args.seq
    lm_flops = tokens * lm_train_flops_per_token(cfg, args.seq)
    print(f"{args.model}: dtype {cfg.dtype} (params {cfg.param_dtype}), remat={cfg.remat}, attention_chunk="
          f"{cfg.attention_chunk}; batch {args.batch} x {args.seq} in {micro} microbatch(es); "
          f"{lm_flops / 1e12:.3f} model TFLOP per LM step")
    if not args.unroll:
        ((t_lm, _),) = timed_calls([run_lm], args.reps)
        report_lm(t_lm, tokens, lm_flops, peak, practical)
        return

    rater = Rater(rater_cfg, rngs=nnx.Rngs(1))
    rater_g = nnx.split(rater)[0]
    eta = nnx.to_pure_dict(nnx.state(rater, nnx.Param))
    problem = MetaProblem(lm_g, rater_g, tx, args.mode, scan_unroll=True, microbatches=micro, heldout_microbatches=micro)
    inner = jax.device_put(random_batch(rng, cfg.vocab_size, (args.unroll, args.batch, args.seq)))
    held = jax.device_put(random_batch(rng, cfg.vocab_size, (args.batch, args.seq)))
    meta = jax.jit(problem.meta_grad).lower(eta, theta, opt, inner, held).compile()
    run_meta = lambda: meta(eta, theta, opt, inner, held)
    (t_lm, _), (t_meta, _) = timed_calls([run_lm, run_meta], args.reps, settle=(2, 0))
    report_lm(t_lm, tokens, lm_flops, peak, practical)
    # the program timed is always unrolled (scan_unroll above): count it as such
    meta_cfg = MetaConfig(unroll=args.unroll, grad_mode=args.mode, population=1, unrolled_max=args.unroll,
                          inner_batch_size=args.batch, outer_batch_size=args.batch)
    meta_flops = sum(meta_member_flops(cfg, rater_cfg, meta_cfg, args.seq).values())
    mem = meta.memory_analysis()
    temp = f"{mem.temp_size_in_bytes / 2**30:.2f} GiB temporaries" if mem is not None else "memory analysis n/a"
    print(f"meta-step T={args.unroll} {args.mode} (rater {args.rater}): {t_meta * 1000:.1f} ms = "
          f"{t_meta / t_lm:.2f} x the LM step; {meta_flops / 1e12:.3f} formula TFLOP, MFU {meta_flops / t_meta / peak:.1%}; {temp}")


def report_lm(t_lm: float, tokens: int, flops: float, peak: float, practical: float) -> None:
    rate = flops / t_lm
    print(f"LM step: {t_lm * 1000:.1f} ms, {tokens / t_lm:,.0f} tokens/s, {rate / 1e12:.1f} TFLOP/s: "
          f"MFU {rate / peak:.1%} ({rate / practical:.1%} of the measured matmul)")


if __name__ == "__main__":
    try:
        main()
    except UserError as e:
        sys.exit(f"full_size.py: error: {e}")
