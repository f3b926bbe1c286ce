"""Config groups: one dataclass per group of ``conf/`` (model, corpus, data, train, mesh, meta).

Hydra composes YAML files from ``conf/``; the result is merged into these dataclasses, so an
unknown key or a value of the wrong type stops the program before any compute (see
``datarater.cli``). Range and choice checks that types cannot express are in
``datarater.config.validate``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any


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
    # Feed-forward layer: "gelu" (Chinchilla's: two matrices and a GELU, today's presets) or
    # "swiglu" (Llama's gated layer: three matrices; what `datarater export format=hf` writes).
    mlp: str = "gelu"
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
    # A .gz/.zst file that ends mid-stream is an error naming it; true: keep its lines up to the
    # cut, with a warning counting what was lost
    allow_truncated: bool = False
    max_documents: int = 0  # 0 = all (the in-memory reader only)
    # memory: read, tokenize and pack the whole split before step 0 (small corpora; exact global
    # shuffle each epoch). stream: a Grain pipeline per process that reads only its own shards
    # (datarater.data.stream). auto: stream when the input is larger than stream_above_mb, or remote.
    reader: str = "auto"
    stream_above_mb: int = 256
    shuffle_window: int = 4096  # stream: packed rows shuffled together
    cycle_length: int = 8  # stream: input shards read interleaved
    eval_sequences: int = 2048  # stream: the evaluation sample, whole validation documents filling this many rows


@dataclass
class DataConfig:
    """Tokenizer and packing."""

    tokenizer: str = "byte"  # byte | sentencepiece | hf
    tokenizer_path: str = ""  # sentencepiece: the .model file; hf: tokenizer.json (or its folder)
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


TRACKERS = ("jsonl", "tensorboard", "wandb")


@dataclass
class LoggingConfig:
    """Where metric rows go besides ``metrics.jsonl`` (always written): TensorBoard event files in
    ``RUN/tensorboard/`` (tensorboardX) and Weights & Biases (``RUN/wandb/``; offline by default,
    so no network is needed). Both are extras: ``pip install 'datarater[tracking]'``."""

    trackers: list[str] = field(default_factory=lambda: ["jsonl"])
    wandb_project: str = "datarater"
    wandb_mode: str = "offline"  # offline (sync later with `wandb sync RUN/wandb/...`) | online


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
class TargetConfig:
    """What the outer loss is measured on, and the LMs evaluated on beside the corpus's own split.

    Nothing set: the corpus's held-out split (the paper's main setting). Otherwise one of
    - a selection of the corpus by ``sources`` and/or ``labels`` (a document must match both
      lists that are given): its documents in the held-out split feed the outer loss and those in
      the validation split are the target's validation set, so no target document is ever in
      the training split (the split is by document id);
    - other files (``paths``, the corpus's readers) or a TFDS dataset (``tfds_name``), split by
      id into outer-loss and validation documents; a target document whose text is also in
      the corpus is an error. With ``weights`` (one per entry of ``paths``) the target is a
      mixture: the outer loss's batches take each entry's rows in proportion to its weight, and
      an LM's target NLL is the weighted mean of its NLL on each entry's validation documents;
      without them the entries are one pool.
    """

    sources: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)  # globs of .jsonl, .jsonl.gz, .parquet, .txt
    tfds_name: str = ""
    tfds_data_dir: str = ""
    tfds_split: str = "train"
    validation_fraction: float = 0.2  # paths / tfds: share of the target's documents kept for evaluation
    weights: list[float] = field(default_factory=list)  # paths: one per entry, the mixture's shares (normalised)

    @property
    def mode(self) -> str:
        """``heldout`` | ``selection`` | ``files``."""
        if self.paths or self.tfds_name:
            return "files"
        return "selection" if (self.sources or self.labels) else "heldout"

    def describe(self) -> str:
        if self.mode == "heldout":
            return "the corpus's held-out split"
        if self.mode == "selection":
            parts = [f"{k} in {v}" for k, v in (("source", self.sources), ("label", self.labels)) if v]
            return "the corpus's documents with " + " and ".join(parts)
        if self.weights:
            total = sum(self.weights)
            return "a mixture of " + ", ".join(f"{w / total:.0%} {p}" for p, w in zip(self.paths, self.weights, strict=True))
        return f"the documents of {self.paths or self.tfds_name}"


@dataclass
class MetaConfig:
    """The bilevel trainer (docs/method.md, "Meta-training")."""

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
    # Consecutive meta-steps whose update was skipped (every member's meta-gradient non-finite)
    # after which the run stops with an error rather than go on with a rater that does not learn.
    max_skipped: int = 5
    target: TargetConfig = field(default_factory=TargetConfig)  # the outer loss's data (see TargetConfig)


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
