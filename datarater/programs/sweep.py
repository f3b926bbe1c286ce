"""`datarater sweep`: discard-ratio sweep per curator, best ratio on the smallest model, then larger.

    RUN/lm/<model>-<curator>-<ratio>/   one train-lm run each (reused when already finished)
    RUN/lm/<model>-none-0-seed<i>/      the unfiltered smallest model again with train.seed + i
                                        (i < sweep.baseline_seeds): the run-to-run noise
    RUN/results.csv, RUN/results.md     one row per run: final NLL, delta, net compute gain, tasks
    RUN/baseline_spread.json            final NLLs of the unfiltered runs over those seeds

1. the smallest preset (``sweep.model``) unfiltered, then at every ratio of ``sweep.ratios`` for
   every curator of ``sweep.curators``;
2. the best ratio per curator by final held-out NLL on that model (DESIGN.md section 5);
3. each preset of ``sweep.larger`` unfiltered and at each curator's best ratio.
Every run has the same steps and batch, so runs compare at equal training compute.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path

from datarater.config import SweepProgram, TrainLMProgram
from datarater.config.curate import validate_curate
from datarater.config.presets import load_preset
from datarater.console import say
from datarater.errors import UserError
from datarater.eval.gain import net_compute_gain, read_curve
from datarater.eval.report.analysis import best_ratio
from datarater.eval.report.inputs import RunResult
from datarater.eval.report.tables import results_markdown, write_results_csv
from datarater.models.flops import lm_param_counts


@dataclass
class PlannedRun:
    name: str
    model: str
    curator: str
    discard: float
    program: TrainLMProgram


def run_name(model: str, curator: str, discard: float) -> str:
    return f"{model}-{curator}-{discard:g}"


def seed_run_name(model: str, i: int) -> str:
    """The unfiltered run of ``model`` with ``train.seed + i``: a replica that measures run-to-run noise."""
    return f"{run_name(model, 'none', 0.0)}-seed{i}"


SEED_RUN = re.compile(r"^(?P<base>.+-none-0)-seed(?P<i>\d+)$")


def lm_program(prog: SweepProgram, model: str, curator: str, discard: float) -> TrainLMProgram:
    """The train-lm program of one sweep point (shared corpus, data, train, mesh, eval).

    The model is the preset ``model`` with ``sweep.compute`` applied (dtype, remat, attention).
    """
    curate = copy.deepcopy(prog.curate)
    curate.name, curate.discard = (curator, discard) if discard > 0 else ("none", 0.0)
    if curator == "perplexity" and not curate.reference_run:
        # The reference LM: the smallest model trained unfiltered on the same corpus.
        curate.reference_run = str(Path(prog.run_dir) / "lm" / run_name(prog.sweep.model, "none", 0.0))
    if curator != "datarater":
        curate.scores = ""  # precomputed side files are the rater's
    return TrainLMProgram(
        run_dir=str(Path(prog.run_dir) / "lm" / run_name(model, curate.name if discard > 0 else "none", discard)),
        model=prog.sweep.compute.apply(load_preset(model)), corpus=copy.deepcopy(prog.corpus), data=copy.deepcopy(prog.data),
        train=copy.deepcopy(prog.train), mesh=copy.deepcopy(prog.mesh), curate=curate, eval=copy.deepcopy(prog.eval),
    )


def plan_stage1(prog: SweepProgram) -> list[PlannedRun]:
    m = prog.sweep.model
    runs = [PlannedRun(run_name(m, "none", 0.0), m, "none", 0.0, lm_program(prog, m, "none", 0.0))]
    for curator in prog.sweep.curators:
        for rho in prog.sweep.ratios:
            if rho > 0:
                runs.append(PlannedRun(run_name(m, curator, rho), m, curator, rho, lm_program(prog, m, curator, rho)))
    return runs


def plan_seed_runs(prog: SweepProgram) -> list[PlannedRun]:
    """Replicas of the smallest model's unfiltered run with seeds ``train.seed + 1 ..``."""
    m, runs = prog.sweep.model, []
    for i in range(1, prog.sweep.baseline_seeds):
        program = lm_program(prog, m, "none", 0.0)
        program.run_dir = str(Path(prog.run_dir) / "lm" / seed_run_name(m, i))
        program.train.seed += i
        runs.append(PlannedRun(seed_run_name(m, i), m, "none", 0.0, program))
    return runs


def baseline_spread(prog: SweepProgram, stage1: list[PlannedRun], seed_runs: list[PlannedRun]) -> dict[str, list[float]]:
    """model -> final NLLs of its unfiltered run and of its seed replicas (the baseline's first)."""
    base = next(r for r in stage1 if r.curator == "none" and r.model == prog.sweep.model)
    return {base.model: [final_nll(r.program.run_dir) for r in [base, *seed_runs]]}


def final_nll(run_dir: str) -> float:
    summary = Path(run_dir) / "summary.json"
    value = json.loads(summary.read_text()).get("final_val_nll") if summary.exists() else None
    return float("inf") if value is None else float(value)


def best_ratio_per_curator(prog: SweepProgram, done: list[PlannedRun]) -> dict[str, float]:
    """Best discard ratio of each curator by final held-out NLL on the smallest model (0 included)."""
    base = next(r for r in done if r.curator == "none" and r.model == prog.sweep.model)
    best = {}
    for curator in prog.sweep.curators:
        mine = [(r.discard, final_nll(r.program.run_dir)) for r in done if r.curator == curator and r.model == prog.sweep.model]
        rho = best_ratio(final_nll(base.program.run_dir), mine)
        best[curator] = 0.0 if rho is None else rho  # no run finished: keep the data unfiltered
    return best


def plan_stage2(prog: SweepProgram, best: dict[str, float]) -> list[PlannedRun]:
    runs = []
    for m in prog.sweep.larger:
        runs.append(PlannedRun(run_name(m, "none", 0.0), m, "none", 0.0, lm_program(prog, m, "none", 0.0)))
        for curator, rho in best.items():
            if rho > 0:
                runs.append(PlannedRun(run_name(m, curator, rho), m, curator, rho, lm_program(prog, m, curator, rho)))
    return runs


def run_all(runs: list[PlannedRun], label: str) -> None:
    from datarater.programs.train_lm import run as train_lm

    for i, r in enumerate(runs, 1):
        done = (Path(r.program.run_dir) / "summary.json").exists()
        if done:
            check_same_model(r)
        say(f"[sweep] {label} {i}/{len(runs)}: {r.name}" + (" (finished earlier: reused)" if done else ""))
        if not done:
            validate_curate(r.program.curate)
            train_lm(r.program)
        if r.program.eval.tasks:
            evaluate_run_tasks(r.program)


def check_same_model(r: PlannedRun) -> None:
    """A finished run is reused only with the model this sweep asks for (its preset and
    ``sweep.compute``): a float32 and a bf16 run must not meet in one table."""
    from dataclasses import asdict

    from datarater.train.load import read_program

    saved, wanted = asdict(read_program(r.program.run_dir).model), asdict(r.program.model)
    diff = [f"model.{k}: {saved[k]!r} -> {wanted[k]!r}" for k in wanted if saved.get(k) != wanted[k]]
    if diff:
        raise UserError(f"sweep: {r.program.run_dir} finished with another model ({', '.join(diff)}); "
                        "use a new run_dir for these settings, or the earlier sweep.compute to reuse it")


def evaluate_run_tasks(program: TrainLMProgram) -> dict:
    """Multiple-choice accuracy of a finished run (cached in RUN/tasks.json)."""
    out = Path(program.run_dir) / "tasks.json"
    if out.exists():
        return json.loads(out.read_text())
    from datarater.eval.accuracy import evaluate_tasks
    from datarater.eval.tasks import load_tasks
    from datarater.train.load import load_lm

    lm = load_lm(program.run_dir)
    tasks = load_tasks(program.eval.tasks, program.eval.limit)
    res = evaluate_tasks(lm.graphdef, lm.params, lm.program, tasks, limit=program.eval.limit,
                         batch_size=program.eval.batch_size)
    out.write_text(json.dumps(res, indent=2))
    return res


def run_results(runs: list[PlannedRun]) -> tuple[list[RunResult], dict[str, float | None]]:
    """RunResults for the report and the net compute gain of each filtered run against its baseline."""
    results, curves = [], {}
    for r in runs:
        curve = read_curve(r.program.run_dir, with_step=True)
        curves[r.name] = curve
        tasks_file = Path(r.program.run_dir) / "tasks.json"
        tasks = json.loads(tasks_file.read_text()) if tasks_file.exists() else {}
        tasks = tasks.get("tasks", tasks)
        steps = max(1, curve[-1][0]) if curve else 1
        results.append(RunResult(
            name=r.name, model=r.model, curator=r.curator, discard=r.discard,
            flops_per_step=curve[-1][1] / steps if curve else 0.0, curve=curve, final_val_nll=final_nll(r.program.run_dir),
            tasks={k: v for k, v in tasks.items() if isinstance(v, dict) and "acc" in v},
            n_params=lm_param_counts(r.program.model).non_embedding,
        ))
    gains: dict[str, float | None] = {}
    for r in runs:
        if r.curator == "none":
            continue
        base = curves.get(run_name(r.model, "none", 0.0))
        if base and curves[r.name]:
            gains[r.name] = net_compute_gain([p[1:] for p in base], [p[1:] for p in curves[r.name]])
    return results, gains


def run(prog: SweepProgram) -> dict:
    from datarater.rundir import prepare_run_dir

    s = prog.sweep
    if not s.curators:
        raise UserError("config key 'sweep.curators' is empty: name curators, e.g. sweep.curators=[datarater,random]")
    run_dir, _ = prepare_run_dir(prog.run_dir, prog, may_change=("sweep.larger", "sweep.baseline_seeds"))
    prog.run_dir = str(run_dir)
    stage1 = plan_stage1(prog)
    for r in stage1:  # bad curator settings stop the sweep before any training
        validate_curate(r.program.curate) if r.curator != "perplexity" else None
    say(f"[sweep] {len(stage1)} runs of {s.model} ({', '.join(s.curators)} at {', '.join(f'{x:g}' for x in s.ratios)})")
    run_all(stage1, s.model)
    seed_runs = plan_seed_runs(prog)
    run_all(seed_runs, f"{s.model} unfiltered, other seeds (run-to-run noise)")
    spread = baseline_spread(prog, stage1, seed_runs)
    (run_dir / "baseline_spread.json").write_text(json.dumps(spread, indent=2))
    best = best_ratio_per_curator(prog, stage1)
    say("[sweep] best ratio per curator: " + ", ".join(f"{c} {rho:g}" for c, rho in best.items()))
    stage2 = plan_stage2(prog, best)
    run_all(stage2, "larger")
    results, gains = run_results(stage1 + stage2)
    write_results_csv(run_dir / "results.csv", results, gains)
    (run_dir / "results.md").write_text(results_markdown(results, gains, best, spread))
    (run_dir / "best_ratios.json").write_text(json.dumps(best, indent=2))
    say((run_dir / "results.md").read_text())
    return {"run_dir": str(run_dir), "best": best, "gains": gains,
            "final_val_nll": {r.name: r.final_val_nll for r in results}, "baseline_spread": spread}
