"""A sweep's runs: how they are named, and what each ended at (final NLL, net compute gain)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from datarater.config import TrainLMProgram
from datarater.config.eval import is_group
from datarater.eval.gain import curve_key, net_compute_gain, read_curve
from datarater.eval.report.inputs import RunResult
from datarater.models.flops import lm_param_counts
from datarater.rundir import checkpoint_steps


@dataclass
class PlannedRun:
    name: str
    model: str
    curator: str
    discard: float
    program: TrainLMProgram


def finished(r: PlannedRun) -> bool:
    """Whether the run ran to its end (its summary is written last)."""
    return (Path(r.program.run_dir) / "summary.json").exists()


def share_left(r: PlannedRun) -> float:
    """The share of the run's training still to do, for an ETA: 0 when it has finished, the steps
    after its latest checkpoint when it resumes from one (at least a twentieth: a run stopped after
    its last checkpoint still has its final evaluation to do), else 1."""
    if finished(r):
        return 0.0
    saved, total = checkpoint_steps(Path(r.program.run_dir)), r.program.train.steps
    return max(0.05, 1.0 - max(saved, default=0) / total) if total > 0 else 1.0


def phase_eta(timed: list[tuple[float, float]], left: float) -> float:
    """Seconds for ``left`` more LMs (`share_left` summed) from the ``(seconds, share)`` of the runs
    trained so far: at the mean time of a run trained whole when there is one, since a resumed run's
    fixed costs (compiling, the final evaluation) do not shrink with its share; else per share of
    the resumed ones."""
    whole = [seconds for seconds, share in timed if share >= 1.0]
    if whole:
        return sum(whole) / len(whole) * left
    shares = sum(share for _, share in timed)
    return sum(seconds for seconds, _ in timed) / shares * left if shares > 0 else math.inf


def run_name(model: str, curator: str, discard: float) -> str:
    return f"{model}-{curator}-{discard:g}"


def seed_run_name(model: str, i: int, curator: str = "none", discard: float = 0.0) -> str:
    """A run of the sweep again with ``train.seed + i`` and ``curate.seed + i``: a replica."""
    return f"{run_name(model, curator, discard)}-seed{i}"


SEED_RUN = re.compile(r"^(?P<base>.+)-seed(?P<i>\d+)$")


def tested_replicas(apart: bool, seeds: int, first: int = 1) -> range:
    """The seed offsets of the replicas a comparison over ``seeds`` seeds tests: ``first .. first + seeds - 1``
    apart from the runs that picked the ratio (seeds ``0 .. first - 1``, `sweep.select_seeds`), else
    ``1 .. seeds - 1`` beside the one that did."""
    return range(first, first + seeds) if apart else range(1, seeds)


def written_protocol(comparison: Path, seeds: int) -> tuple[bool, int, int]:
    """``(select_apart, seeds, select_seeds)`` of a written comparison.json: one written before
    select_apart existed tested its picking runs too, one written before its seeds were recorded had
    ``seeds``, one written before select_seeds existed picked on one seed."""
    data = json.loads(comparison.read_text())
    return bool(data.get("select_apart", False)), int(data.get("seeds", seeds)), int(data.get("select_seeds", 1))


def final_nll(run_dir: str, set_name: str = "validation") -> float:
    """Final NLL of a finished run on one of its validation sets (inf when unknown)."""
    summary = Path(run_dir) / "summary.json"
    data = json.loads(summary.read_text()) if summary.exists() else {}
    value = data.get("final_nll_sets", {}).get(set_name)
    if value is None and set_name == "validation":
        value = data.get("final_val_nll")  # runs made before validation sets existed
    return float("inf") if value is None else float(value)


def train_flops_per_step(run_dir: str, curve: list[tuple]) -> float:
    """Training FLOPs per step of a run: from its curve's last point, else its summary (a run
    with no curve on the set asked for), else 0."""
    if curve:
        return curve[-1][1] / max(1, curve[-1][0])
    summary = Path(run_dir) / "summary.json"
    data = json.loads(summary.read_text()) if summary.exists() else {}
    return float(data.get("train_flops") or 0.0) / max(1, int(data.get("steps") or 1))


def run_results(runs: list[PlannedRun], on: str = "validation",
                count_curation: bool = True) -> tuple[list[RunResult], dict[str, float | None]]:
    """RunResults for the report and the net compute gain of each filtered run against its baseline,
    on the evaluation curve of ``on`` (the corpus's validation split, the target's, a source's or a label's); without
    ``count_curation`` the curator's FLOPs are left out (scores computed once, amortised)."""
    results, curves = [], {}
    key = curve_key(on)  # a source's or label's curve: the sweep's LMs had it in eval.curve_sets
    for r in runs:
        # LMs trained before eval.curve_sets have no curve on a source or label: no gain, not another set's
        curve = read_curve(r.program.run_dir, with_step=True, key=key, required=not is_group(on))
        curves[r.name] = curve
        tasks_file = Path(r.program.run_dir) / "tasks.json"
        tasks = json.loads(tasks_file.read_text()) if tasks_file.exists() else {}
        tasks = tasks.get("tasks", tasks)
        results.append(RunResult(
            name=r.name, model=r.model, curator=r.curator, discard=r.discard,
            flops_per_step=train_flops_per_step(r.program.run_dir, curve), curve=curve,
            final_val_nll=final_nll(r.program.run_dir, on),
            tasks={k: v for k, v in tasks.items() if isinstance(v, dict) and "acc" in v},
            n_params=lm_param_counts(r.program.model).non_embedding,
        ))
    gains: dict[str, float | None] = {}
    for r in runs:
        if r.curator == "none":
            continue
        seed = SEED_RUN.match(r.name)  # a replica: against the unfiltered replica of its seed
        base = curves.get(seed_run_name(r.model, int(seed["i"])) if seed else run_name(r.model, "none", 0.0))
        if base and curves[r.name]:
            mine = [p[1:] if count_curation else (p[1], 0.0, p[3]) for p in curves[r.name]]
            gains[r.name] = net_compute_gain([p[1:] for p in base], mine)
    return results, gains
