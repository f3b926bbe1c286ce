"""Net compute gain of a curated run over its unfiltered baseline (docs/method.md, "Downstream LMs and the protocol").

    gain = 1 - (FLOPs the filtered run needs to reach the baseline's final held-out NLL,
                curation included) / (the baseline's total FLOPs)

read off the evaluation curves by interpolation; ``None`` = the filtered run never got there.
A curve is a list of ``(train_flops, curate_flops, val_nll)`` at evaluation steps, FLOPs
cumulative from the start of training.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

from datarater.errors import UserError

log = logging.getLogger(__name__)

CurvePoint = tuple[float, float, float]  # (train_flops, curate_flops, val_nll)
ExtraFlops = float | Callable[[float], float] | None


def curve_key(set_name: str) -> str:
    """The metrics.jsonl key of a train-lm run's evaluation curve on one validation set: ``val_nll``
    (the corpus's split), ``target_nll`` (the target's), ``nll/<group>`` (source:<s> / label:<l>,
    where the run had ``eval.curve_sets``)."""
    return {"validation": "val_nll", "target": "target_nll"}.get(set_name, f"nll/{set_name}")


def flops_to_reach(
    curve_flops: Sequence[float], curve_nll: Sequence[float], target_nll: float, interpolation: str = "log"
) -> float | None:
    """FLOPs at which the curve first reaches ``target_nll``, or ``None`` if it never does.

    Between the first two evaluation points that bracket the target, NLL is taken as linear in
    log-FLOPs (``interpolation="log"``; linear FLOPs where the earlier point has none) or in
    FLOPs (``"linear"``). ``curve_flops`` must be non-decreasing.
    """
    if interpolation not in ("log", "linear"):
        raise ValueError(f"interpolation must be 'log' or 'linear', got {interpolation!r}")
    if len(curve_flops) != len(curve_nll):
        raise ValueError(f"{len(curve_flops)} FLOPs values but {len(curve_nll)} NLL values")
    if any(b < a for a, b in zip(curve_flops, curve_flops[1:], strict=False)):
        raise ValueError("curve FLOPs must be non-decreasing (sort the curve by step)")
    for i, (f, nll) in enumerate(zip(curve_flops, curve_nll, strict=True)):
        if not nll <= target_nll:  # NaN never reaches
            continue
        if i == 0:
            return float(f)
        f0, n0 = float(curve_flops[i - 1]), float(curve_nll[i - 1])
        if not math.isfinite(n0):  # nothing to interpolate from: the conservative answer
            return float(f)
        frac = (n0 - target_nll) / (n0 - nll)  # n0 > target >= nll
        if interpolation == "log" and f0 > 0:
            return math.exp(math.log(f0) + frac * (math.log(f) - math.log(f0)))
        return f0 + frac * (f - f0)
    return None


def _extra(extra: ExtraFlops, train_flops: float) -> float:
    if extra is None:
        return 0.0
    if callable(extra):
        return float(extra(train_flops))
    return float(extra) * train_flops


def total_flops(curve: Sequence[CurvePoint], extra: ExtraFlops = None) -> list[float]:
    """Cumulative cost at each point: training + recorded curation + ``extra``.

    ``extra`` adds costs the curve does not record: a number is FLOPs per training FLOP (e.g.
    rater inference per LM FLOP), a callable maps cumulative training FLOPs to extra FLOPs.
    """
    return [t + c + _extra(extra, t) for t, c, _ in curve]


def net_compute_gain(
    baseline_curve: Sequence[CurvePoint],
    filtered_curve: Sequence[CurvePoint],
    filtered_extra_flops: ExtraFlops = None,
    interpolation: str = "log",
) -> float | None:
    """1 - (cost for the filtered run to reach the baseline's final NLL) / (baseline's total cost).

    ``None`` when the filtered curve never reaches that NLL. Negative when filtering cost more.
    """
    if not baseline_curve or not filtered_curve:
        raise ValueError("both curves need at least one evaluation point")
    target = float(baseline_curve[-1][2])
    baseline_total = total_flops(baseline_curve[-1:])[0]
    if not baseline_total > 0:
        raise ValueError(f"the baseline's total FLOPs must be > 0, got {baseline_total}")
    cost = total_flops(filtered_curve, filtered_extra_flops)
    needed = flops_to_reach(cost, [p[2] for p in filtered_curve], target, interpolation)
    return None if needed is None else 1.0 - needed / baseline_total


def _flops_per_step_of_run(run_dir: Path) -> float:
    from datarater.models.flops import lm_flops_per_step
    from datarater.train.load import read_program

    prog = read_program(run_dir)
    return lm_flops_per_step(prog.model, prog.train.batch_size, prog.data.seq_len)


def read_curve(run_dir: str | Path, with_step: bool = False, key: str = "val_nll", required: bool = True) -> list[tuple]:
    """The evaluation curve of a train-lm run from ``RUN/metrics.jsonl``, sorted by step.

    Rows with ``key`` (`curve_key`: ``val_nll`` the corpus's validation split, ``target_nll`` the
    target's, ``nll/<group>`` a source's or label's) give points ``(train_flops, curate_flops, nll)``
    (with the step in front when ``with_step``). ``train_flops`` missing -> step x FLOPs per step of the run's
    config.yaml; ``curate_flops`` missing -> 0. A repeated step keeps its last row; lines that
    are not JSON (a run killed mid-write) are skipped and counted in a warning. No row with ``key``:
    an error, or ``[]`` when not ``required``.
    """
    path = Path(run_dir).expanduser()
    metrics = path / "metrics.jsonl"
    if not metrics.is_file():
        raise UserError(f"{path} has no metrics.jsonl: is it a train-lm run directory?")
    rows: dict[int, dict] = {}
    bad = 0
    for line in metrics.read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and isinstance(row.get(key), (int, float)):
            rows[row["step"]] = row
    if bad:
        log.warning("%s: skipped %d lines that are not JSON", metrics, bad)
    if not rows and required:
        raise UserError(f"{metrics} has no evaluation rows ({key}): train the run first")
    per_step = None
    out = []
    for step in sorted(rows):
        row = rows[step]
        train = row.get("train_flops")
        if train is None:
            per_step = _flops_per_step_of_run(path) if per_step is None else per_step
            train = step * per_step
        point = (float(train), float(row.get("curate_flops") or 0.0), float(row[key]))
        out.append((step, *point) if with_step else point)
    return out
