"""The report's inputs: the dataclasses a caller fills in, and the checks of their shapes and values."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from datarater.errors import UserError

BASELINE_CURATOR = "none"
RATER_CURATOR = "datarater"


@dataclass
class RunResult:
    """One trained LM: its curve is ``(step, train_flops, curate_flops, val_nll)`` rows with cumulative FLOPs."""

    name: str
    model: str
    curator: str
    discard: float
    flops_per_step: float
    curve: list[tuple[int, float, float, float]]
    final_val_nll: float
    tasks: dict[str, dict[str, float]] = field(default_factory=dict)
    n_params: int | None = None

    def total_flops(self) -> float:
        """Training + curation FLOPs at the last evaluation point (NaN without a curve)."""
        if not self.curve:
            return float("nan")
        _, train, curate, _ = self.curve[-1]
        return float(train) + float(curate)


@dataclass
class ScoreTable:
    """Rater scores of scored sequences, row-aligned.

    ``texts`` are the decoded texts (features are computed on them; the report shows excerpts),
    ``labels`` the corruption labels ("clean" for clean) when known, ``curator_scores`` other
    curators' scores of the same rows (higher = keep) for the audit.
    """

    ids: list[str]
    sources: list[str]
    scores: np.ndarray
    texts: list[str]
    n_segments: np.ndarray
    labels: list[str] | None = None
    curator_scores: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class RowNLL:
    """Each LM's NLL on the rows of the score table (row-aligned), for NLL by source and label."""

    nats: dict[str, np.ndarray]  # run name -> nats summed over each row's predicted tokens
    tokens: np.ndarray  # predicted tokens of each row (the same for every LM)


@dataclass
class ReportInputs:
    """Everything the report shows; only ``runs`` is required (it may be empty)."""

    runs: list[RunResult]
    gains: dict[str, float | None] | None = None
    scores: ScoreTable | Mapping | Sequence | None = None
    row_nll: RowNLL | None = None
    ratios: list[float] | None = None
    # model -> final NLLs of its unfiltered LM trained with different seeds (the baseline's first):
    # the run-to-run noise that section 1 compares every difference with (`sweep.seeds`).
    baseline_spread: dict[str, list[float]] | None = None
    # curator -> the best ratio the sweep picked on the mean over its picking seeds (sweep.select_seeds);
    # None: picked here from the runs' final NLLs (the first seed's)
    best: dict[str, float] | None = None
    title: str = "DataRater analysis report"
    # the set of the runs' final NLL and of their curves (`tables.nll_name` of sweep.select_on)
    nll: str = "held-out NLL"
    notes: list[str] = field(default_factory=list)
    # Markdown sections written by the program after the results (target, comparison over seeds,
    # NLL per validation set, the objective probe), each starting with its "## " heading.
    sections: list[str] = field(default_factory=list)


_TABLE_KEYS = {
    "ids": ("id", "ids"),
    "sources": ("source", "sources"),
    "scores": ("score", "scores"),
    "texts": ("text", "texts"),
    "n_segments": ("n_segments",),
    "labels": ("label", "labels"),
    "curator_scores": ("curator_scores",),
}


def _pick(d: Mapping, field_name: str, where: str, required: bool = True):
    for key in _TABLE_KEYS[field_name]:
        if key in d:
            return d[key]
    if required:
        raise UserError(f"score table {where}: missing key {_TABLE_KEYS[field_name][0]!r}")
    return None


def as_score_table(data: ScoreTable | Mapping | Sequence) -> ScoreTable:
    """A `ScoreTable` from itself, a dict of columns, or a list of row dicts; checks lengths and values."""
    if isinstance(data, ScoreTable):
        table = data
    elif isinstance(data, Mapping):
        labels = _pick(data, "labels", "columns", required=False)
        table = ScoreTable(
            ids=[str(x) for x in _pick(data, "ids", "columns")],
            sources=[str(x) for x in _pick(data, "sources", "columns")],
            scores=np.asarray(_pick(data, "scores", "columns"), dtype=np.float64),
            texts=[str(x) for x in _pick(data, "texts", "columns")],
            n_segments=np.asarray(_pick(data, "n_segments", "columns")),
            labels=None if labels is None else [str(x) for x in labels],
            curator_scores=dict(_pick(data, "curator_scores", "columns", required=False) or {}),
        )
    elif isinstance(data, Sequence):
        cols: dict[str, list] = {k: [] for k in ("ids", "sources", "scores", "texts", "n_segments", "labels")}
        curator: dict[str, list] = {}
        for i, row in enumerate(data):
            if not isinstance(row, Mapping):
                raise UserError(f"score table row {i}: expected a dict, got {type(row).__name__}")
            for k in ("ids", "sources", "scores", "texts", "n_segments"):
                cols[k].append(_pick(row, k, f"row {i}"))
            cols["labels"].append(_pick(row, "labels", f"row {i}", required=False))
            for name, value in (_pick(row, "curator_scores", f"row {i}", required=False) or {}).items():
                curator.setdefault(name, []).append(value)
        has_labels = [x is not None for x in cols["labels"]]
        if any(has_labels) and not all(has_labels):
            raise UserError(f"score table: {has_labels.count(False)} of {len(data)} rows have no 'label'")
        table = ScoreTable(
            ids=[str(x) for x in cols["ids"]],
            sources=[str(x) for x in cols["sources"]],
            scores=np.asarray(cols["scores"], dtype=np.float64),
            texts=[str(x) for x in cols["texts"]],
            n_segments=np.asarray(cols["n_segments"]),
            labels=[str(x) for x in cols["labels"]] if any(has_labels) else None,
            curator_scores=curator,
        )
    else:
        raise UserError(
            f"score table: expected a ScoreTable, a dict of columns or a list of rows, got {type(data).__name__}"
        )
    return _checked(table)


def _checked(t: ScoreTable) -> ScoreTable:
    n = len(t.ids)
    if n == 0:
        raise UserError("score table is empty")
    lengths = {
        "sources": len(t.sources),
        "scores": len(t.scores),
        "texts": len(t.texts),
        "n_segments": len(t.n_segments),
    }
    if t.labels is not None:
        lengths["labels"] = len(t.labels)
    curator_scores = {}
    for name, s in t.curator_scores.items():
        arr = np.asarray(s, dtype=np.float64).reshape(-1)
        lengths[f"curator_scores[{name!r}]"] = arr.size
        curator_scores[name] = arr
    bad = {k: v for k, v in lengths.items() if v != n}
    if bad:
        raise UserError(f"score table: {n} ids but " + ", ".join(f"{v} {k}" for k, v in bad.items()))
    scores = np.asarray(t.scores, dtype=np.float64).reshape(-1)
    for name, arr in [("score", scores), *((f"curator_scores[{k!r}]", v) for k, v in curator_scores.items())]:
        n_bad = int(np.count_nonzero(~np.isfinite(arr)))
        if n_bad:
            raise UserError(f"score table: {n_bad} of {n} values of {name} are NaN or infinite")
    n_segments = np.asarray(t.n_segments).reshape(-1)
    if not np.issubdtype(n_segments.dtype, np.number) or np.any(n_segments < 0):
        raise UserError("score table: n_segments must be non-negative integers")
    return ScoreTable(
        ids=list(t.ids),
        sources=list(t.sources),
        scores=scores,
        texts=list(t.texts),
        n_segments=n_segments.astype(np.int64),
        labels=None if t.labels is None else list(t.labels),
        curator_scores=curator_scores,
    )


def check_runs(runs: Sequence[RunResult]) -> None:
    """Raises `UserError` for repeated run names, a discard ratio outside [0, 1) or a malformed curve row."""
    names = [r.name for r in runs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UserError(f"report: run names must be unique; repeated: {', '.join(dup)}")
    for r in runs:
        if not 0.0 <= float(r.discard) < 1.0:
            raise UserError(f"run {r.name!r}: discard ratio {r.discard} is not in [0, 1)")
        for j, row in enumerate(r.curve):
            if len(row) != 4:
                raise UserError(
                    f"run {r.name!r}: curve row {j} has {len(row)} fields, expected (step, train_flops, curate_flops, val_nll)"
                )


def check_row_nll(row_nll: RowNLL, n_rows: int) -> None:
    """Raises `UserError` unless every LM's NLLs and the token counts have one value per row of the score table."""
    bad = {k: len(v) for k, v in row_nll.nats.items() if len(v) != n_rows}
    if len(row_nll.tokens) != n_rows or bad:
        raise UserError(f"per-row NLL: the score table has {n_rows} rows but tokens has {len(row_nll.tokens)}"
                        + "".join(f", {k} has {v}" for k, v in bad.items()))
