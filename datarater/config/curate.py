"""Configs of curation: the curator (``curate``), ``datarater score`` and ``datarater filter``.

Plain dataclasses (no JAX import: the command line reads them at start-up) and their
``validate_*`` checks, which raise `UserError` naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from datarater.errors import UserError

CURATORS = ("none", "datarater", "random", "perplexity", "heuristic", "dsir", "oracle", "classifier", "attributes")
BANDS = ("low", "mid", "high")
UNITS = ("sequence", "document")
SCORE_SPLITS = ("train", "heldout", "validation")
FILTER_FORMATS = ("jsonl", "parquet")  # jsonl is written zstandard-compressed (.jsonl.zst)


@dataclass
class CurateConfig:
    """Which curator scores sequences and the discard ratio rho applied with its scores."""

    name: str = "none"  # none | datarater | random | perplexity | heuristic | dsir | oracle | classifier
    discard: float = 0.0  # rho in [0, 1): fraction of the (oversampled) stream thrown away
    rater_run: str = ""  # datarater: a finished meta-train run directory
    scores: str = ""  # a `datarater score` run directory: read its side files (rows or attributes) instead of scoring
    # attributes: a directory of attribute files, <relative input path>.parquet / .jsonl[.gz|.zst], written by
    # `datarater score score.unit=document` or any other tool (a fastText score, an LLM rater's ratings)
    attributes: str = ""
    attribute: str = "score"  # attributes: the column to rank by (higher = keep)
    attribute_id: str = "id"  # attributes: the column holding the document id
    reference_run: str = ""  # perplexity: a train-lm run directory (the reference LM)
    band: str = "low"  # perplexity: keep low | mid | high perplexity
    target_paths: list[str] = field(default_factory=list)  # dsir: target corpus files or globs
    dsir_buckets: int = 2**16  # dsir: hashed n-gram feature buckets
    dsir_ngrams: int = 2  # dsir: word n-grams up to this order (1 = unigrams, 2 = + bigrams)
    classifier_pool_docs: int = 2000  # classifier: training documents sampled as the "pool" class
    calibration_rows: int = 2048  # perplexity mid / dsir: corpus rows sampled for the median / raw model
    seed: int = 0


@dataclass
class ScoreConfig:
    """`datarater score`: what is scored and how the side files are cut."""

    unit: str = "sequence"  # sequence (packed rows, what the LM trains on) | document
    split: str = "train"  # train | heldout | validation
    shard_size: int = 4096  # unit=sequence: rows per parquet shard (unit=document: one attribute file per input file)
    batch_size: int = 64  # sequences per scoring call
    # Score files already in the run directory that another producer made (another rater, or the
    # same rater path after more meta-training) stop the run, naming both; true: rescore them.
    force: bool = False


@dataclass
class FilterConfig:
    """`datarater filter`: the per-item acceptance rule applied to documents."""

    format: str = "jsonl"  # jsonl | parquet
    batch_size: int = 32  # N of the rule: the batch the top-K rule would fill
    seed: int = 0


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise UserError(f"config key '{key}': {msg}")


def validate_curate(c: CurateConfig, prefix: str = "curate") -> None:
    _check(c.name in CURATORS, f"{prefix}.name", f"unknown curator '{c.name}'; choose one of {', '.join(CURATORS)}")
    _check(0.0 <= c.discard < 1.0, f"{prefix}.discard", f"the discard ratio must be in [0, 1), got {c.discard}")
    _check(c.band in BANDS, f"{prefix}.band", f"must be one of {', '.join(BANDS)}, got '{c.band}'")
    _check(c.dsir_buckets > 0, f"{prefix}.dsir_buckets", f"must be a positive integer, got {c.dsir_buckets}")
    _check(c.dsir_ngrams >= 1, f"{prefix}.dsir_ngrams", f"must be >= 1, got {c.dsir_ngrams}")
    _check(c.classifier_pool_docs > 0, f"{prefix}.classifier_pool_docs", f"must be a positive integer, got {c.classifier_pool_docs}")
    _check(c.calibration_rows > 0, f"{prefix}.calibration_rows", f"must be a positive integer, got {c.calibration_rows}")
    if c.scores:
        return  # scores are read from side files: the curator's own inputs are not needed
    if c.name == "none":
        _check(c.discard == 0.0, f"{prefix}.discard",
               f"is {c.discard} but no curator is chosen: set curate=<datarater|random|perplexity|heuristic|dsir|oracle|classifier> "
               "or curate.scores=<a `datarater score` run>")
        return
    if c.name == "datarater":
        _check(bool(c.rater_run), f"{prefix}.rater_run",
               "is empty: give a finished meta-train run directory (or precomputed scores with curate.scores=...)")
    elif c.name == "attributes":
        _check(bool(c.attributes), f"{prefix}.attributes",
               "is empty: give a directory of attribute files (<relative input path>.parquet with id and a score column)")
    elif c.name == "perplexity":
        _check(bool(c.reference_run), f"{prefix}.reference_run",
               "is empty: give the train-lm run directory of the reference LM")


def validate_score(s: ScoreConfig, prefix: str = "score") -> None:
    _check(s.unit in UNITS, f"{prefix}.unit", f"must be one of {', '.join(UNITS)}, got '{s.unit}'")
    _check(s.split in SCORE_SPLITS, f"{prefix}.split", f"must be one of {', '.join(SCORE_SPLITS)}, got '{s.split}'")
    _check(s.shard_size > 0, f"{prefix}.shard_size", f"must be a positive integer, got {s.shard_size}")
    _check(s.batch_size > 0, f"{prefix}.batch_size", f"must be a positive integer, got {s.batch_size}")


def validate_filter(f: FilterConfig, prefix: str = "filter") -> None:
    _check(f.format in FILTER_FORMATS, f"{prefix}.format",
           f"must be one of {', '.join(FILTER_FORMATS)}, got '{f.format}'")
    _check(f.batch_size > 0, f"{prefix}.batch_size", f"must be a positive integer, got {f.batch_size}")
