"""A sweep's plan: the runs of each step (its grid, the seed replicas, the larger models), the set that
picks each curator's best ratio, the target it runs toward, and how many LMs are left to train."""

from __future__ import annotations

import copy
from pathlib import Path

from datarater.config import SweepProgram, TrainLMProgram
from datarater.config.eval import is_group
from datarater.config.presets import load_preset
from datarater.console import say
from datarater.errors import UserError
from datarater.eval.report.analysis import best_ratio
from datarater.programs.sweep_runs import (
    PlannedRun,
    final_nll,
    finished,
    run_name,
    seed_run_name,
    share_left,
    tested_replicas,
)


def lm_program(prog: SweepProgram, model: str, curator: str, discard: float) -> TrainLMProgram:
    """The train-lm program of one sweep point (shared corpus, data, train, mesh, eval).

    The model is the preset ``model`` with ``sweep.compute`` applied (dtype, remat, attention).
    """
    curate = copy.deepcopy(prog.curate)
    curate.name, curate.discard = (curator, discard) if discard > 0 else ("none", 0.0)
    if curator in prog.sweep.raters:  # another meta-learned rater, under its own name
        curate.name, curate.rater_run = "datarater", prog.sweep.raters[curator]
        curate.scores = prog.sweep.rater_scores.get(curator, "") if discard > 0 else ""
        if discard == 0:
            curate.name = "none"
    if curator == "perplexity" and not curate.reference_run:
        # The reference LM: the smallest model trained unfiltered on the same corpus.
        curate.reference_run = str(Path(prog.run_dir) / "lm" / run_name(prog.sweep.model, "none", 0.0))
    if curator != "datarater" and curator not in prog.sweep.raters:
        curate.scores = ""  # precomputed side files are the rater's
    evaluate = copy.deepcopy(prog.eval)
    on = select_set(prog)
    if is_group(on) and on not in evaluate.curve_sets:
        evaluate.curve_sets.append(on)  # the curves, and so net compute gain, on the set that picks the ratio
    return TrainLMProgram(
        run_dir=str(Path(prog.run_dir) / "lm" / run_name(model, curator if discard > 0 else "none", discard)),
        model=prog.sweep.compute.apply(load_preset(model)), corpus=copy.deepcopy(prog.corpus), data=copy.deepcopy(prog.data),
        train=copy.deepcopy(prog.train), mesh=copy.deepcopy(prog.mesh), curate=curate, eval=evaluate,
        target=copy.deepcopy(prog.target), logging=copy.deepcopy(prog.logging),
    )


def seeded(prog: SweepProgram, model: str, curator: str, rho: float, i: int) -> PlannedRun:
    """The sweep point ``(curator, rho)`` again with ``train.seed + i`` and ``curate.seed + i``."""
    program = lm_program(prog, model, curator, rho)
    program.run_dir = str(Path(prog.run_dir) / "lm" / seed_run_name(model, i, curator, rho))
    program.train.seed += i
    program.curate.seed += i
    return PlannedRun(seed_run_name(model, i, curator, rho), model, curator, rho, program)


def plan_stage1(prog: SweepProgram) -> list[PlannedRun]:
    m = prog.sweep.model
    runs = [PlannedRun(run_name(m, "none", 0.0), m, "none", 0.0, lm_program(prog, m, "none", 0.0))]
    for curator in prog.sweep.curators:
        for rho in prog.sweep.ratios:
            if rho > 0:
                runs.append(PlannedRun(run_name(m, curator, rho), m, curator, rho, lm_program(prog, m, curator, rho)))
    return runs


def plan_picking(prog: SweepProgram) -> list[PlannedRun]:
    """Step 1's grid with the further picking seeds ``1 .. sweep.select_seeds - 1`` (none by default):
    the mean over these and step 1's own runs picks each curator's ratio (`best_ratio_per_curator`)."""
    return [seeded(prog, r.model, r.curator, r.discard, i) for r in plan_stage1(prog)
            for i in range(1, prog.sweep.select_seeds)]


def apart(prog: SweepProgram) -> bool:
    """Whether the comparison over seeds leaves out the runs that picked the ratios (``sweep.select_apart``,
    with more than one seed: one seed gives no test, and its table is the first seed's)."""
    return prog.sweep.select_apart and prog.sweep.seeds > 1


def replica_seeds(prog: SweepProgram) -> range:
    """The seed offsets of this sweep's replicas (`tested_replicas`)."""
    return tested_replicas(apart(prog), prog.sweep.seeds, prog.sweep.select_seeds)


def plan_seed_runs(prog: SweepProgram, best: dict[str, float]) -> list[PlannedRun]:
    """Replicas with seeds ``train.seed + i`` (`replica_seeds`) of the unfiltered run, of each curator at its best
    ratio, and of random and the oracle (when swept) at those ratios.

    A replica draws again everything a run of the curator draws: the LM's init and data order
    (``train.seed``) and the curator's own draws (``curate.seed``: random's hash salt, the sample
    DSIR's raw model and the classifier's pool class are fitted on). With the salt fixed, random's
    replicas would keep the rows of one draw, and its spread over seeds, hence the test against
    it, would leave out the variance of the draw. The rater being curated is not meta-trained again."""
    m, points = prog.sweep.model, [("none", 0.0)]
    for curator, rho in best.items():
        if rho > 0:
            points += [(curator, rho)] + [(c, rho) for c in ("random", "oracle") if c in prog.sweep.curators]
    return [seeded(prog, m, curator, rho, i) for curator, rho in dict.fromkeys(points) for i in replica_seeds(prog)]


def lms_left(prog: SweepProgram) -> tuple[float, int]:
    """``(to train, in all)`` in LMs, an estimate before the sweep starts, for an ETA (a run that resumes
    from a checkpoint counts its `share_left`): which points get replicas is only known once step 1
    has picked the ratios, so they are counted at the most there can be (the unfiltered run, each
    curator, and random and the oracle at each further ratio the curators pick), less the replicas
    already finished; only step 1's runs count their share. Once every run of step 1 has finished the
    ratios are known, and the count is exact: the replicas of the points picked (by the set
    `sweep.run` picks them on, the rater's target when the sweep names none), whatever other
    replicas are there."""
    if prog.target.mode == "heldout" and (target := rater_target(prog)) is not None:
        prog = copy.copy(prog)  # as `resolve_target`, quietly and on a copy
        prog.target = target
    stage1, seeds, s = plan_stage1(prog) + plan_picking(prog), replica_seeds(prog), prog.sweep
    if all(finished(r) for r in stage1):
        best = best_ratio_per_curator(prog, stage1)
        later = plan_seed_runs(prog, best) + plan_stage2(prog, best)
        return sum(map(share_left, later)), len(stage1) + len(later)
    ratios = sum(r > 0 for r in s.ratios)
    curators = len(s.curators) if ratios else 0  # with no ratio above 0 every best ratio is 0
    extra = sum(c in s.curators for c in ("random", "oracle")) * max(0, min(ratios, curators) - 1)
    replicas, larger = (1 + curators + extra) * len(seeds), len(s.larger) * (1 + curators)
    lm = Path(prog.run_dir) / "lm"
    points = [("none", 0.0)] + [(c, rho) for c in s.curators for rho in s.ratios if rho > 0]
    replicas_done = sum((lm / seed_run_name(s.model, i, c, rho) / "summary.json").exists() for i in seeds for c, rho in points)
    larger_done = sum((lm / run_name(m, c, rho) / "summary.json").exists() for m in s.larger for c, rho in points)
    to_train = sum(map(share_left, stage1))
    return (to_train + max(0, replicas - replicas_done) + max(0, larger - larger_done),
            len(stage1) + replicas + larger)


def select_set(prog: SweepProgram) -> str:
    """The validation set that picks the best ratio: ``sweep.select_on``, or (auto) the target's when
    a target is set, else the corpus's."""
    if prog.sweep.select_on != "auto":
        return prog.sweep.select_on
    return "target" if prog.target.mode != "heldout" else "validation"


def picking_nlls(prog: SweepProgram, done: list[PlannedRun]) -> dict[tuple[str, float], float]:
    """``(curator, ratio) -> mean final NLL on `select_set``` over the runs of ``done`` at that point
    on the smallest model (the picking seeds: one run each by default); inf when one has not finished."""
    on, nlls = select_set(prog), {}
    for r in done:
        if r.model == prog.sweep.model:
            nlls.setdefault((r.curator, r.discard), []).append(final_nll(r.program.run_dir, on))
    return {point: sum(v) / len(v) for point, v in nlls.items()}


def best_ratio_per_curator(prog: SweepProgram, done: list[PlannedRun]) -> dict[str, float]:
    """Best discard ratio of each curator by final NLL on `select_set` on the smallest model (0 included),
    its mean over the picking seeds (`picking_nlls`)."""
    mean, best = picking_nlls(prog, done), {}
    for curator in prog.sweep.curators:
        mine = [(rho, nll) for (c, rho), nll in mean.items() if c == curator]
        rho = best_ratio(mean.get(("none", 0.0)), mine)
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


def check_targets(prog: SweepProgram) -> None:
    """What needs a target has one, before any LM trains."""
    none = prog.target.mode == "heldout"
    if prog.sweep.select_on == "target" and none:
        raise UserError("config key 'sweep.select_on': 'target' but no target is set (target.* or the rater's "
                        "meta.target): set one or use sweep.select_on=auto")
    for c in prog.sweep.curators:
        if c in ("dsir", "classifier") and none and not prog.curate.target_paths:
            raise UserError(f"config key 'sweep.curators': {c} models a target set: give curate.target_paths=[...] or "
                            "a target (target.labels / target.sources / target.paths)")


def rater_target(prog: SweepProgram):
    """The target the sweep's rater was meta-trained toward, or None (no rater run, or the held-out split)."""
    from datarater.artifacts import read_meta_target

    if prog.curate.rater_run and (Path(prog.curate.rater_run) / "config.yaml").exists():
        target = read_meta_target(prog.curate.rater_run)
        return target if target.mode != "heldout" else None
    return None


def resolve_target(prog: SweepProgram) -> None:
    """With no target given, the sweep takes the one its rater was meta-trained toward (if any)."""
    if prog.target.mode == "heldout" and (target := rater_target(prog)) is not None:
        say(f"[sweep] target: {target.describe()} (the rater's meta.target)")
        prog.target = target
