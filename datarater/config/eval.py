"""Configs of `datarater eval` (no JAX import: the command line reads these at start-up)."""

from __future__ import annotations

from dataclasses import dataclass, field

from datarater.config.groups import LoggingConfig
from datarater.errors import UserError

# eval.normalize: which accuracies results.md shows (results.json always holds all three)
NORMALIZE_METRICS = {"raw": ("acc",), "char": ("acc_norm",), "byte": ("acc_bytes",), "both": ("acc", "acc_norm"),
                     "all": ("acc", "acc_norm", "acc_bytes")}
NORMALIZE_CHOICES = tuple(NORMALIZE_METRICS)


def is_group(name: str) -> bool:
    """Whether ``name`` names a group of a validation split: ``source:<name>`` or ``label:<name>``."""
    kind, _, value = name.partition(":")
    return kind in ("source", "label") and value != ""


@dataclass
class EvalConfig:
    """What to evaluate an LM on."""

    tasks: list[str] = field(default_factory=list)  # multiple-choice task files (jsonl; globs allowed)
    limit: int = 0  # items per task, 0 = all
    validation: list[str] = field(default_factory=list)  # extra validation corpora (globs, like corpus.paths)
    max_sequences: int = 0  # packed sequences per validation set, 0 = all
    every: int = 0  # train-lm: evaluate the tasks every N steps (0 = only at the end)
    # train-lm: groups of the validation split (source:<name>, label:<name>) also evaluated along the
    # curve, each as metric "nll/<group>" (the sweep sets it when sweep.select_on names one)
    curve_sets: list[str] = field(default_factory=list)
    batch_size: int = 32  # sequences per forward pass
    # accuracy shown in results.md: raw (summed log-lik) | char (per character: lm-eval's acc_norm) |
    # byte (per UTF-8 byte: acc_bytes) | both (raw and char) | all
    normalize: str = "both"


@dataclass
class EvalProgram:
    """`datarater eval`: NLL and multiple-choice accuracy of a trained LM."""

    lm_run: str = ""  # a train-lm run directory
    run_dir: str = ""  # where results go; "" = LM_RUN/eval
    eval: EvalConfig = field(default_factory=EvalConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)  # the results' row also goes to these trackers


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise UserError(f"config key '{key}': {msg}")


def validate_eval(e: EvalConfig, prefix: str = "eval") -> None:
    for k in ("limit", "max_sequences", "every"):
        _check(getattr(e, k) >= 0, f"{prefix}.{k}", f"must be >= 0 (0 = all / off), got {getattr(e, k)}")
    _check(e.batch_size > 0, f"{prefix}.batch_size", f"must be a positive integer, got {e.batch_size}")
    _check(e.normalize in NORMALIZE_CHOICES, f"{prefix}.normalize",
           f"must be one of {', '.join(NORMALIZE_CHOICES)}; got '{e.normalize}'")
    for i, g in enumerate(e.curve_sets):
        _check(is_group(g), f"{prefix}.curve_sets[{i}]", f"must be source:<name> or label:<name>; got {g!r}")
    for k in ("tasks", "validation"):
        for i, p in enumerate(getattr(e, k)):
            _check(isinstance(p, str) and p.strip() != "", f"{prefix}.{k}[{i}]", "is empty: give a file or a glob")
