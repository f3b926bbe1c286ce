"""Program configs: one dataclass per subcommand, composed of the config groups."""

from __future__ import annotations

from dataclasses import dataclass, field

from datarater.config.curate import CurateConfig, FilterConfig, ScoreConfig
from datarater.config.eval import EvalConfig
from datarater.config.groups import (
    CorpusConfig,
    DataConfig,
    LoggingConfig,
    MeshConfig,
    MetaConfig,
    ModelCompute,
    ModelConfig,
    TargetConfig,
    TrainConfig,
)


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
    # The target set (as meta.target): evaluated on at the end beside the corpus's validation
    # split, and what curators that model a target (oracle, dsir, classifier) are given.
    target: TargetConfig = field(default_factory=TargetConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)  # metrics.jsonl, and TensorBoard / W&B if asked


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
    logging: LoggingConfig = field(default_factory=LoggingConfig)  # metrics.jsonl, and TensorBoard / W&B if asked


@dataclass
class ScoreProgram:
    """`datarater score`: score every sequence (or document) of a corpus split into side files."""

    run_dir: str = "runs/score"
    curate: CurateConfig = field(default_factory=CurateConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    data: DataConfig = field(default_factory=DataConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    engine: str = "local"  # local | ray: where score.unit=document scores the input files
    workers: int = 2  # engine=ray: actors (one curator each) / parallel tasks
    ray_address: str = ""  # engine=ray: empty starts a local cluster of `workers` CPUs; "auto" or ray://... joins one


@dataclass
class FilterProgram:
    """`datarater filter`: write the documents the per-item rule keeps, and a manifest."""

    run_dir: str = "runs/filter"
    curate: CurateConfig = field(default_factory=CurateConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    data: DataConfig = field(default_factory=DataConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    engine: str = "local"  # local | ray: where the input files are scored (if needed) and filtered
    workers: int = 2
    ray_address: str = ""


@dataclass
class SweepConfig:
    """`datarater sweep`: which curators, ratios and model sizes."""

    model: str = "nano"  # the smallest preset: the discard ratio is chosen with it
    larger: list[str] = field(default_factory=list)  # presets trained at each curator's best ratio
    ratios: list[float] = field(default_factory=lambda: [0.0, 0.1, 0.25, 0.5, 0.75, 0.9])
    curators: list[str] = field(default_factory=lambda: ["datarater", "random"])
    # The unfiltered LM and each curator at its best ratio (with random and the oracle at that
    # ratio) are trained again with seeds train.seed+1, ... (init and data order) and
    # curate.seed+1, ... (the curator's own draws, e.g. random's salt): the results give
    # mean ± 95% CI and Welch's test against unfiltered and random over `seeds` runs each
    # (1 = one run each, no test).
    seeds: int = 1
    # true: the runs that pick the ratios (seed train.seed, or the select_seeds seeds below) only pick
    # them, and the `seeds` replicas are the test (no winner's curse); false: the picking run is one
    # of the `seeds` runs tested.
    select_apart: bool = True
    # Seeds whose mean final NLL picks each curator's best ratio: the whole grid, the unfiltered run
    # included, with train.seed + i and curate.seed + i for i = 0 .. select_seeds - 1. One run per
    # point picks a ratio by its seed's luck, most at high discard, where runs vary most. The
    # replicas tested are then seeds select_seeds .. select_seeds + seeds - 1; more than 1 needs
    # select_apart (a picking run must not be tested). With seeds=1 there is no test and the
    # comparison is the first seed's.
    select_seeds: int = 1
    # The validation set whose final NLL picks each curator's best ratio: auto (the target's when a
    # target is set, else the corpus's), validation, target, source:<name> or label:<name>.
    select_on: str = "auto"
    # More meta-learned raters swept beside curate.rater_run, as curators of their own name:
    # name -> meta-train run directory (e.g. a rater of another target), and optionally
    # name -> `datarater score` run directory with its side files.
    raters: dict[str, str] = field(default_factory=dict)
    rater_scores: dict[str, str] = field(default_factory=dict)
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
    # Every LM is evaluated on it; empty: the target of curate.rater_run's meta-training, if any.
    target: TargetConfig = field(default_factory=TargetConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)  # every LM's trackers (train-lm's logging)


@dataclass
class ReportProgram:
    """`datarater report`: the analysis report of a sweep (and the rater behind it)."""

    run_dir: str = "runs/sweep"  # a sweep or quickstart run directory
    rater_run: str = ""  # meta-train run whose rater is analysed ("" = the sweep's curate.rater_run)
    rows: int = 2000  # validation rows scored for histograms, extremes and the feature fit


@dataclass
class ProbeConfig:
    """`datarater probe`: which inner-LM ages, how far ahead and how many draws."""

    ages: list[int] = field(default_factory=lambda: [0, 20, 50, 100, 150, 190])
    steps: int = 0  # T inner steps looked ahead (0 = meta.unroll)
    repeats: int = 8  # draws of T batches averaged at each age
    heldout_rows: int = 256  # rows of each target batch
    reject: list[str] = field(default_factory=list)  # labels (by=source: sources) the oracle weights at 0
    # (empty: all but the kept ones: clean, or meta.target.labels / meta.target.sources)
    each: bool = False  # also one oracle per label (by=source: source) not kept, rejecting it alone (same draws)
    by: str = "label"  # label | source (oracles reject sources; the target is meta.target.sources)


@dataclass
class ProbeProgram:
    """`datarater probe`: does the outer objective reward rejecting corrupted data, at which ages?"""

    run_dir: str = "runs/probe"
    model: ModelConfig = field(default_factory=ModelConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)  # the inner LMs' optimiser, as meta-train's
    meta: MetaConfig = field(default_factory=MetaConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)


@dataclass
class QuickstartConfig:
    """The budget of `datarater quickstart`: every stage in one run directory."""

    # What fits in 15 minutes on 2 cores: the rater meta-trained toward meta.target against
    # unfiltered, random (the floor) and the oracle (the ceiling), 3 seeds each (after the seed
    # that picks the ratio: sweep.select_apart).
    ratios: list[float] = field(default_factory=lambda: [0.0, 0.25])
    curators: list[str] = field(default_factory=lambda: ["datarater", "random", "oracle"])
    seeds: int = 3  # seeds of the unfiltered LM and of each curator at its best ratio (sweep.seeds)
    report_rows: int = 2000
    # full=true: also the paper's same-corpus rater (outer loss on the held-out split), the
    # baselines (heuristic, perplexity, and DSIR and the classifier toward the same target), more
    # ratios, and the probe of what each objective wants.
    full: bool = False
    full_ratios: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75])
    full_curators: list[str] = field(default_factory=lambda: [
        "datarater", "datarater_samecorpus", "random", "oracle", "heuristic", "perplexity", "dsir", "classifier"])
    probe_ages: list[int] = field(default_factory=lambda: [0, 25, 50, 100, 150])


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


EXPORT_FORMATS = ("hf",)


@dataclass
class ExportProgram:
    """`datarater export`: a trained LM or rater in a format other tools load."""

    run: str = ""  # a train-lm run (the LM) or a meta-train run (the rater)
    format: str = "hf"  # hf: safetensors + config.json + tokenizer
    out: str = ""  # "" = RUN/export-<format>
    step: int = -1  # train-lm runs: the checkpoint step (-1 = the latest)
