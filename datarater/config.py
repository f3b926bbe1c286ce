"""Structured configs: one dataclass per config group, one per program.

Hydra composes YAML files from ``conf/``; the result is merged into these dataclasses, so an
unknown key or a value of the wrong type stops the program before any compute (see
``datarater.cli``). Range and choice checks that types cannot express live in ``validate_*``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from datarater.curate.config import CurateConfig, FilterConfig, ScoreConfig
from datarater.errors import UserError
from datarater.eval.config import EvalConfig


@dataclass
class ModelConfig:
    """Shape of a Transformer (the causal LM, or the non-causal rater trunk)."""

    name: str = "nano"
    vocab_size: int = 264  # byte tokenizer: 256 bytes + pad/bos/eos = 259, padded to a multiple of 8
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    d_head: int = 32
    d_ff: int = 512
    rope_base: float = 10000.0
    norm_eps: float = 1e-6
    init_std: float = 0.02
    dtype: str = "float32"  # compute dtype: float32 | bfloat16
    param_dtype: str = "float32"
    remat: bool = False  # rematerialise each block in the backward pass
    # Causal attention in this many query blocks, each against the keys up to its own end, so the
    # masked upper triangle is skipped (1 = one full T x T product; 2 computes 3/4 of it). Results
    # agree to float rounding, which is enough to move a meta-training run to another trajectory.
    causal_blocks: int = 1
    # Queries per attention chunk (0 = all at once). Each chunk's T_chunk x T scores are computed,
    # used and (in the backward pass) recomputed on their own, so a layer holds one chunk's scores,
    # not T x T per head: what bounds attention memory at T=2048 without a fused kernel.
    attention_chunk: int = 0


@dataclass
class CorpusConfig:
    """Where documents come from and how they are split."""

    name: str = "files"
    kind: str = "files"  # files | tfds
    paths: list[str] = field(default_factory=list)  # globs of .jsonl, .jsonl.gz, .parquet, .txt
    text_field: str = "text"
    id_field: str = "id"  # missing -> "<file name>:<line>"
    source_field: str = "source"  # missing -> the file's stem
    tfds_name: str = ""  # kind=tfds: dataset name, e.g. "my_corpus" or "my_corpus/config:1.0.0"
    tfds_data_dir: str = ""
    tfds_split: str = "train"  # the TFDS split read; our own train/heldout/validation split is by id
    heldout_fraction: float = 0.05
    validation_fraction: float = 0.05
    split_salt: str = "datarater-split-v1"
    max_bad_fraction: float = 0.1  # a file with more unreadable lines than this is an error
    max_documents: int = 0  # 0 = all


@dataclass
class DataConfig:
    """Tokenizer and packing."""

    tokenizer: str = "byte"  # byte | sentencepiece
    tokenizer_path: str = ""  # sentencepiece model file
    seq_len: int = 128
    add_bos: bool = True
    add_eos: bool = True


@dataclass
class TrainConfig:
    """Optimiser, schedule and loop of LM training."""

    steps: int = 200
    batch_size: int = 32
    lr: float = 3e-3
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    weight_decay: float = 0.1
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    clip_norm: float = 1.0
    # Rows per device in one microbatch; 0: the whole batch at once. Smaller: each batch runs as
    # several microbatches in a loop, their gradients summed -- the same update with one
    # microbatch's activations in memory. Must divide each device's rows (batch_size / batch
    # shards); a value >= them means no microbatching, so a preset works on slices of several sizes.
    microbatch_rows: int = 0
    seed: int = 0
    log_every: int = 10
    eval_every: int = 50
    eval_batches: int = 8
    checkpoint_every: int = 50
    keep_checkpoints: int = 2


@dataclass
class MeshConfig:
    """Device mesh. ``-1`` in one axis takes all devices left over."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    # logical axis name -> mesh axes (MaxText style); unlisted logical axes are replicated
    rules: dict[str, Any] = field(
        default_factory=lambda: {
            "batch": ["data", "fsdp"],
            "embed": "fsdp",
            "mlp": "tensor",
            "heads": "tensor",
            "vocab": "tensor",
        }
    )


@dataclass
class MetaConfig:
    """The bilevel trainer (DESIGN.md section 2)."""

    steps: int = 300
    unroll: int = 2  # T inner steps per meta-gradient
    grad_mode: str = "remat"  # autodiff | remat | mixed
    # An unroll T <= this runs unrolled in the compiled program, longer ones as a `lax.scan` loop.
    # Same arithmetic. Unrolled is faster on XLA:CPU (T=2: 1.1-1.2x) but lets the scheduler keep
    # every step's recomputed activations alive; the loop keeps remat/mixed memory flat in T.
    unrolled_max: int = 2
    # Rater-weighted inner steps per meta-step taken before the T unrolled ones and not
    # differentiated: members age unroll + plain_inner_steps per meta-step, each plain step at the
    # cost of an LM step, so short runs also see late-training members.
    plain_inner_steps: int = 0
    population: int = 2  # inner LMs, each with its own data stream and optimiser state
    lifetime: int = 200  # inner steps before a member is re-initialised (staggered across members)
    inner_batch_size: int = 16
    outer_batch_size: int = 16
    outer_lr: float = 1e-3
    outer_warmup_steps: int = 20
    outer_weight_decay: float = 0.1
    outer_clip_norm: float = 1.0
    outer_update: str = "average_params"  # average_params (paper) | average_grads
    inner_eps_root: float = 1e-8  # keeps Adam differentiable at zero second moment
    # Rows per device in one microbatch of a member's inner gradients, held-out loss and rater
    # scores; 0: whole batches. Smaller: they run in loops over microbatches -- the same
    # meta-gradient with one microbatch's activations in memory at a time. With it the paper's
    # 8 x 400M population comes near 16 GiB per chip on a v5e-32 (README, "Planning"). Must divide
    # each device's rows of both batches.
    microbatch_rows: int = 0
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 50
    keep_checkpoints: int = 2


@dataclass
class ParamsProgram:
    """`datarater params`: parameter counts of a model preset."""

    model: ModelConfig = field(default_factory=ModelConfig)


@dataclass
class TrainLMProgram:
    """`datarater train-lm`: train a causal LM on a corpus."""

    run_dir: str = "runs/train-lm"
    model: ModelConfig = field(default_factory=ModelConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    curate: CurateConfig = field(default_factory=CurateConfig)  # online curation of the training stream
    eval: EvalConfig = field(default_factory=EvalConfig)  # multiple-choice tasks every eval.every steps


@dataclass
class MetaTrainProgram:
    """`datarater meta-train`: meta-learn a DataRater on a corpus."""

    run_dir: str = "runs/meta-train"
    model: ModelConfig = field(default_factory=ModelConfig)  # the inner LMs
    rater: ModelConfig = field(default_factory=ModelConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)  # the inner optimiser (schedule over meta.lifetime)
    meta: MetaConfig = field(default_factory=MetaConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)


@dataclass
class ScoreProgram:
    """`datarater score`: score every sequence (or document) of a corpus split into side files."""

    run_dir: str = "runs/score"
    curate: CurateConfig = field(default_factory=CurateConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    data: DataConfig = field(default_factory=DataConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)


@dataclass
class FilterProgram:
    """`datarater filter`: write the documents the per-item rule keeps, and a manifest."""

    run_dir: str = "runs/filter"
    curate: CurateConfig = field(default_factory=CurateConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    data: DataConfig = field(default_factory=DataConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)



@dataclass
class ModelCompute:
    """How a preset computes, leaving its shape alone: what `sweep` may set for all its models.

    A field left null keeps the preset's value (``conf/model/<name>.yaml``).
    """

    dtype: str | None = None
    param_dtype: str | None = None
    remat: bool | None = None
    causal_blocks: int | None = None
    attention_chunk: int | None = None

    @classmethod
    def of(cls, model: ModelConfig) -> ModelCompute:
        """All of ``model``'s compute settings."""
        return cls(**{k: getattr(model, k) for k in vars(cls())})

    def apply(self, model: ModelConfig) -> ModelConfig:
        """``model`` with every field this sets replaced."""
        given = {k: v for k, v in vars(self).items() if v is not None}
        return replace(model, **given)


@dataclass
class SweepConfig:
    """`datarater sweep`: which curators, ratios and model sizes."""

    model: str = "nano"  # the smallest preset: the discard ratio is chosen with it
    larger: list[str] = field(default_factory=list)  # presets trained at each curator's best ratio
    ratios: list[float] = field(default_factory=lambda: [0.0, 0.1, 0.25, 0.5, 0.75, 0.9])
    curators: list[str] = field(default_factory=lambda: ["datarater", "random"])
    # Unfiltered runs of the smallest model with seeds train.seed, train.seed+1, ...: their spread
    # is the run-to-run noise the report compares every difference with (1 = no extra runs).
    baseline_seeds: int = 1
    # Compute settings for every model of the sweep (null = the preset's own), e.g. bf16 with
    # float32 master weights and chunked attention on TPU/GPU:
    #   sweep.compute.dtype=bfloat16 sweep.compute.attention_chunk=256
    compute: ModelCompute = field(default_factory=ModelCompute)


@dataclass
class SweepProgram:
    """`datarater sweep`: discard-ratio sweep per curator, then larger models at the best ratio."""

    run_dir: str = "runs/sweep"
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    curate: CurateConfig = field(default_factory=CurateConfig)  # shared options: rater_run, scores, target_paths, ...
    eval: EvalConfig = field(default_factory=EvalConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)


@dataclass
class ReportProgram:
    """`datarater report`: the analysis report of a sweep (and the rater behind it)."""

    run_dir: str = "runs/sweep"  # a sweep or quickstart run directory
    rater_run: str = ""  # meta-train run whose rater is analysed ("" = the sweep's curate.rater_run)
    rows: int = 2000  # validation rows scored for histograms, extremes and the feature fit


@dataclass
class QuickstartConfig:
    """The budget of `datarater quickstart`: every stage in one run directory."""

    ratios: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75])
    curators: list[str] = field(default_factory=lambda: ["datarater", "random", "heuristic", "perplexity"])
    baseline_seeds: int = 3  # unfiltered LMs with different seeds: the noise band of the report (sweep.baseline_seeds)
    report_rows: int = 2000


@dataclass
class QuickstartProgram:
    """`datarater quickstart`: embedded corpus -> meta-train -> score -> sweep -> report."""

    run_dir: str = "runs/quickstart"
    model: ModelConfig = field(default_factory=ModelConfig)
    rater: ModelConfig = field(default_factory=ModelConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    inner: TrainConfig = field(default_factory=TrainConfig)  # the inner LMs' optimiser in meta-training
    meta: MetaConfig = field(default_factory=MetaConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    quickstart: QuickstartConfig = field(default_factory=QuickstartConfig)


_DTYPES = ("float32", "bfloat16")


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise UserError(f"config key '{key}': {msg}")


def validate_model(m: ModelConfig, prefix: str = "model") -> None:
    for k in ("vocab_size", "d_model", "n_layers", "n_heads", "d_head", "d_ff", "causal_blocks"):
        _check(getattr(m, k) > 0, f"{prefix}.{k}", f"must be a positive integer, got {getattr(m, k)}")
    _check(m.attention_chunk >= 0, f"{prefix}.attention_chunk",
           f"must be >= 0 (0 = all queries at once), got {m.attention_chunk}")
    _check(m.d_head % 2 == 0, f"{prefix}.d_head", f"must be even for rotary embeddings, got {m.d_head}")
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


def validate_data(d: DataConfig, prefix: str = "data") -> None:
    _check(d.tokenizer in ("byte", "sentencepiece"), f"{prefix}.tokenizer", f"must be 'byte' or 'sentencepiece', got '{d.tokenizer}'")
    if d.tokenizer == "sentencepiece":
        _check(bool(d.tokenizer_path), f"{prefix}.tokenizer_path", "is empty: give the SentencePiece .model file")
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
              "checkpoint_every", "keep_checkpoints"):
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


def validate_sweep(s: SweepConfig, prefix: str = "sweep") -> None:
    from datarater.curate.config import CURATORS

    _check(len(s.ratios) > 0, f"{prefix}.ratios", "is empty: give discard ratios, e.g. [0,0.25,0.5]")
    for i, r in enumerate(s.ratios):
        _check(0.0 <= r < 1.0, f"{prefix}.ratios[{i}]", f"discard ratios must be in [0, 1), got {r}")
    for c in s.curators:
        _check(c in CURATORS and c != "none", f"{prefix}.curators", f"unknown curator '{c}'; choose from {CURATORS[1:]}")
    _check(s.baseline_seeds >= 1, f"{prefix}.baseline_seeds", f"must be >= 1 (1 = no extra seeds), got {s.baseline_seeds}")
    from datarater.models.presets import load_preset, preset_names

    for key, preset in [(f"{prefix}.model", s.model), *((f"{prefix}.larger", m) for m in s.larger)]:
        _check(preset in preset_names(), key, f"unknown model preset '{preset}'; available: {', '.join(preset_names())}")
        validate_model(s.compute.apply(load_preset(preset)), f"{prefix}.compute")


def validate_quickstart(q: QuickstartConfig, prefix: str = "quickstart") -> None:
    validate_sweep(SweepConfig(ratios=list(q.ratios), curators=list(q.curators), baseline_seeds=q.baseline_seeds), prefix)
    _check(q.report_rows >= 0, f"{prefix}.report_rows", f"must be >= 0 (0 = no scored rows in the report), got {q.report_rows}")
