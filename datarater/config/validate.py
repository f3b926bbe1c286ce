"""Checks of config values that types cannot express; each raises `UserError` naming the key."""

from __future__ import annotations

import math

from datarater.config.curate import CURATORS
from datarater.config.eval import is_group
from datarater.config.groups import (
    CorpusConfig,
    DataConfig,
    MeshConfig,
    MetaConfig,
    ModelConfig,
    TargetConfig,
    TrainConfig,
)
from datarater.config.presets import load_preset, preset_names
from datarater.config.programs import QuickstartConfig, SweepConfig
from datarater.errors import UserError

_DTYPES = ("float32", "bfloat16")
_MLPS = ("gelu", "swiglu")


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise UserError(f"config key '{key}': {msg}")


def validate_model(m: ModelConfig, prefix: str = "model") -> None:
    for k in ("vocab_size", "d_model", "n_layers", "n_heads", "d_head", "d_ff", "causal_blocks"):
        _check(getattr(m, k) > 0, f"{prefix}.{k}", f"must be a positive integer, got {getattr(m, k)}")
    _check(m.attention_chunk >= 0, f"{prefix}.attention_chunk",
           f"must be >= 0 (0 = all queries at once), got {m.attention_chunk}")
    _check(m.d_head % 2 == 0, f"{prefix}.d_head", f"must be even for rotary embeddings, got {m.d_head}")
    _check(m.mlp in _MLPS, f"{prefix}.mlp", f"must be one of {_MLPS}, got '{m.mlp}'")
    _check(m.dtype in _DTYPES, f"{prefix}.dtype", f"must be one of {_DTYPES}, got '{m.dtype}'")
    _check(m.param_dtype in _DTYPES, f"{prefix}.param_dtype", f"must be one of {_DTYPES}, got '{m.param_dtype}'")


def validate_corpus(c: CorpusConfig, prefix: str = "corpus") -> None:
    _check(c.kind in ("files", "tfds"), f"{prefix}.kind", f"must be 'files' or 'tfds', got '{c.kind}'")
    if c.kind == "files":
        _check(len(c.paths) > 0, f"{prefix}.paths", "is empty: give files or globs, e.g. corpus.paths=[data/*.jsonl]")
    else:
        _check(bool(c.tfds_name), f"{prefix}.tfds_name", "is empty: name the prepared TFDS dataset")
    for k in ("heldout_fraction", "validation_fraction"):
        v = getattr(c, k)
        _check(0.0 <= v < 1.0, f"{prefix}.{k}", f"must be in [0, 1), got {v}")
    _check(
        c.heldout_fraction + c.validation_fraction < 1.0,
        f"{prefix}.heldout_fraction",
        "heldout_fraction + validation_fraction must be < 1 so that a train split remains",
    )
    _check(0.0 <= c.max_bad_fraction <= 1.0, f"{prefix}.max_bad_fraction", "must be in [0, 1]")
    _check(c.max_documents >= 0, f"{prefix}.max_documents", "must be >= 0 (0 = all)")
    _check(c.reader in ("auto", "memory", "stream"), f"{prefix}.reader",
           f"must be 'auto', 'memory' or 'stream', got '{c.reader}'")
    for k in ("stream_above_mb", "shuffle_window", "cycle_length", "eval_sequences"):
        _check(getattr(c, k) >= (0 if k == "stream_above_mb" else 1), f"{prefix}.{k}",
               f"must be a positive integer, got {getattr(c, k)}")


def validate_data(d: DataConfig, prefix: str = "data") -> None:
    _check(d.tokenizer in ("byte", "sentencepiece", "hf"), f"{prefix}.tokenizer",
           f"must be 'byte', 'sentencepiece' or 'hf', got '{d.tokenizer}'")
    if d.tokenizer == "sentencepiece":
        _check(bool(d.tokenizer_path), f"{prefix}.tokenizer_path", "is empty: give the SentencePiece .model file")
    if d.tokenizer == "hf":
        _check(bool(d.tokenizer_path), f"{prefix}.tokenizer_path",
               "is empty: give a Hugging Face tokenizer.json (or the folder holding it)")
    _check(d.seq_len >= 2, f"{prefix}.seq_len", f"must be >= 2, got {d.seq_len}")


def validate_train(t: TrainConfig, prefix: str = "train") -> None:
    for k in ("steps", "batch_size", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints"):
        _check(getattr(t, k) > 0, f"{prefix}.{k}", f"must be a positive integer, got {getattr(t, k)}")
    _check(t.lr > 0, f"{prefix}.lr", f"must be > 0, got {t.lr}")
    _check(t.warmup_steps >= 0, f"{prefix}.warmup_steps", "must be >= 0")
    _check(0.0 <= t.min_lr_ratio <= 1.0, f"{prefix}.min_lr_ratio", "must be in [0, 1]")
    _check(t.weight_decay >= 0, f"{prefix}.weight_decay", "must be >= 0")
    _check(0 <= t.b1 < 1 and 0 <= t.b2 < 1, f"{prefix}.b1/b2", "must be in [0, 1)")
    _check(t.clip_norm >= 0, f"{prefix}.clip_norm", "must be >= 0 (0 disables clipping)")
    _check(t.eval_batches >= 0, f"{prefix}.eval_batches", "must be >= 0")
    check_microbatch_rows(t.microbatch_rows, f"{prefix}.microbatch_rows")


def check_microbatch_rows(rows: int, key: str) -> None:
    """``train.`` / ``meta.microbatch_rows``: rows per device per microbatch, 0 = whole batches."""
    _check(rows >= 0, key, f"must be >= 0 (0 = whole batches at once), got {rows}")


def validate_inner_train(t: TrainConfig, prefix: str = "train") -> None:
    """The inner LMs' optimiser in meta-training: `validate_train`; microbatching is meta's."""
    validate_train(t, prefix)
    _check(t.microbatch_rows == 0, f"{prefix}.microbatch_rows",
           "is not used by meta-training's inner LMs: set meta.microbatch_rows instead")


def validate_mesh(m: MeshConfig, prefix: str = "mesh") -> None:
    sizes = {"data": m.data, "fsdp": m.fsdp, "tensor": m.tensor}
    for k, v in sizes.items():
        _check(v == -1 or v >= 1, f"{prefix}.{k}", f"must be >= 1 or -1 (the rest), got {v}")
    _check(list(sizes.values()).count(-1) <= 1, prefix, "at most one axis may be -1")
    for logical, axes in m.rules.items():
        names = [axes] if isinstance(axes, str) else list(axes or [])
        for a in names:
            _check(a in sizes, f"{prefix}.rules.{logical}", f"names mesh axis '{a}'; allowed: {list(sizes)}")


def validate_meta(m: MetaConfig, prefix: str = "meta") -> None:
    for k in ("steps", "unroll", "population", "lifetime", "inner_batch_size", "outer_batch_size", "log_every",
              "checkpoint_every", "keep_checkpoints", "max_skipped"):
        _check(getattr(m, k) > 0, f"{prefix}.{k}", f"must be a positive integer, got {getattr(m, k)}")
    _check(m.grad_mode in ("autodiff", "remat", "mixed"), f"{prefix}.grad_mode",
           f"must be one of autodiff, remat, mixed; got '{m.grad_mode}'")
    _check(m.outer_update in ("average_params", "average_grads"), f"{prefix}.outer_update",
           f"must be average_params or average_grads; got '{m.outer_update}'")
    _check(m.unrolled_max >= 0, f"{prefix}.unrolled_max", f"must be >= 0, got {m.unrolled_max}")
    _check(m.plain_inner_steps >= 0, f"{prefix}.plain_inner_steps", f"must be >= 0, got {m.plain_inner_steps}")
    per_step = m.unroll + m.plain_inner_steps
    _check(m.lifetime >= per_step, f"{prefix}.lifetime",
           f"must be >= meta.unroll + meta.plain_inner_steps ({per_step}), got {m.lifetime}")
    _check(m.outer_lr > 0, f"{prefix}.outer_lr", "must be > 0")
    _check(m.inner_eps_root >= 0, f"{prefix}.inner_eps_root", "must be >= 0")
    check_microbatch_rows(m.microbatch_rows, f"{prefix}.microbatch_rows")
    validate_target(m.target, f"{prefix}.target")


def validate_target(t: TargetConfig, prefix: str = "meta.target") -> None:
    """Shape checks of a target; what it selects is checked against the corpus when it is read."""
    for k in ("sources", "labels", "paths"):
        for i, v in enumerate(getattr(t, k)):
            _check(isinstance(v, str) and v.strip() != "", f"{prefix}.{k}[{i}]", "is empty")
    _check(not ((t.sources or t.labels) and (t.paths or t.tfds_name)), prefix,
           "selects from the corpus (sources/labels) and names other data (paths/tfds_name): give one or the other")
    _check(not (t.paths and t.tfds_name), f"{prefix}.tfds_name", "and paths are both set: give one or the other")
    _check(0.0 < t.validation_fraction < 1.0, f"{prefix}.validation_fraction",
           f"must be in (0, 1), got {t.validation_fraction}")
    if t.weights:
        _check(bool(t.paths), f"{prefix}.weights", "weighs the entries of paths, and no paths are given")
        _check(len(t.weights) == len(t.paths), f"{prefix}.weights",
               f"needs one weight per entry of {prefix}.paths ({len(t.paths)}), got {len(t.weights)}")
        for i, w in enumerate(t.weights):
            _check(isinstance(w, (int, float)) and math.isfinite(w) and w > 0, f"{prefix}.weights[{i}]",
                   f"must be a finite number > 0, got {w!r}")


def validate_sweep(s: SweepConfig, prefix: str = "sweep") -> None:
    _check(len(s.ratios) > 0, f"{prefix}.ratios", "is empty: give discard ratios, e.g. [0,0.25,0.5]")
    for i, r in enumerate(s.ratios):
        _check(0.0 <= r < 1.0, f"{prefix}.ratios[{i}]", f"discard ratios must be in [0, 1), got {r}")
    for c in s.curators:
        _check((c in CURATORS and c != "none") or c in s.raters, f"{prefix}.curators",
               f"unknown curator '{c}'; choose from {CURATORS[1:]} or a name of sweep.raters")
    for name in s.raters:
        _check(name not in CURATORS and name.replace("_", "").isalnum(), f"{prefix}.raters.{name}",
               f"a rater's name must be letters, digits and _ and not a curator's ({', '.join(CURATORS)})")
    for name in s.rater_scores:
        _check(name in s.raters, f"{prefix}.rater_scores.{name}", "names no rater of sweep.raters")
    _check(s.seeds >= 1, f"{prefix}.seeds", f"must be >= 1 (1 = one run each), got {s.seeds}")
    _check(s.select_seeds >= 1, f"{prefix}.select_seeds", f"must be >= 1 (1 = the first seed picks), got {s.select_seeds}")
    _check(s.select_seeds == 1 or s.select_apart, f"{prefix}.select_seeds",
           f"{s.select_seeds} picking seeds need {prefix}.select_apart=true: the runs that pick the ratios are "
           "then not also the ones tested")
    _check(s.select_on in ("auto", "validation", "target") or is_group(s.select_on),
           f"{prefix}.select_on", f"must be auto, validation, target, source:<name> or label:<name>; got '{s.select_on}'")
    for key, preset in [(f"{prefix}.model", s.model), *((f"{prefix}.larger", m) for m in s.larger)]:
        _check(preset in preset_names(), key, f"unknown model preset '{preset}'; available: {', '.join(preset_names())}")
        validate_model(s.compute.apply(load_preset(preset)), f"{prefix}.compute")


def validate_quickstart(q: QuickstartConfig, prefix: str = "quickstart") -> None:
    samecorpus = {"datarater_samecorpus": "(the quickstart's same-corpus rater)"}
    validate_sweep(SweepConfig(ratios=list(q.ratios), curators=list(q.curators), seeds=q.seeds, raters=samecorpus), prefix)
    validate_sweep(SweepConfig(ratios=list(q.full_ratios), curators=list(q.full_curators), seeds=q.seeds,
                               raters=samecorpus), prefix + ".full")
    for i, age in enumerate(q.probe_ages):
        _check(age >= 0, f"{prefix}.probe_ages[{i}]", f"must be >= 0, got {age}")
    _check(q.report_rows >= 0, f"{prefix}.report_rows", f"must be >= 0 (0 = no scored rows in the report), got {q.report_rows}")


def validate_logging(g, prefix: str = "logging") -> None:
    from datarater.config.groups import TRACKERS

    for i, t in enumerate(g.trackers):
        _check(t in TRACKERS, f"{prefix}.trackers[{i}]", f"unknown tracker '{t}'; choose from {', '.join(TRACKERS)}")
    _check(g.wandb_mode in ("offline", "online"), f"{prefix}.wandb_mode", f"must be offline or online, got '{g.wandb_mode}'")
