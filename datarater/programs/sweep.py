"""`datarater sweep`: discard-ratio sweep per curator, best ratio on the smallest model, then larger.

    RUN/lm/<model>-<curator>-<ratio>/   one train-lm run each (reused when already finished)
    RUN/lm/<run>-seed<i>/               a run again with train.seed + i and curate.seed + i
                                        (i = 1 .. sweep.seeds): the unfiltered LM and each curator at
                                        its best ratio, with random and the oracle at that ratio (the
                                        comparison's seeds)
    RUN/results.csv, RUN/results.md     one row per run: final NLL per validation set, delta, net
                                        compute gain, tasks; then the comparison over seeds
    RUN/comparison.json                 mean ± 95% CI per curator, Welch tests, gap closed
    RUN/baseline_spread.json            final NLLs of the unfiltered runs over those seeds

1. the smallest preset (``sweep.model``) unfiltered, then at every ratio of ``sweep.ratios`` for
   every curator of ``sweep.curators``;
2. the best ratio per curator by final NLL on ``sweep.select_on`` (the target's validation set when
   a target is set, else the corpus's) on that model (docs/method.md, "Downstream LMs and the protocol");
3. the seed replicas of step 2's runs and of the unfiltered run (``sweep.seeds``). With
   ``sweep.select_apart`` (the default) the comparison over seeds uses only the replicas: the run
   that picked a ratio is not also in the test of it, which would favour whichever ratio had a
   lucky first seed (a winner's curse). Without it (the sweeps before 2026-12-06), the first seed
   picks and is tested, and ``sweep.seeds`` counts it;
4. each preset of ``sweep.larger`` unfiltered and at each curator's best ratio.
Every run has the same steps and batch, so runs compare at equal training compute.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

from datarater.config import SweepProgram, TrainLMProgram
from datarater.config.curate import validate_curate
from datarater.config.eval import is_group
from datarater.config.presets import load_preset
from datarater.console import format_duration, say
from datarater.errors import UserError
from datarater.eval.compare import compare_curators, comparison_markdown
from datarater.eval.report.analysis import best_ratio
from datarater.eval.report.tables import results_markdown, write_results_csv
from datarater.programs.sweep_runs import (
    PlannedRun,
    final_nll,
    finished,
    phase_eta,
    run_name,
    run_results,
    seed_run_name,
    share_left,
    tested_replicas,
    written_protocol,
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


def plan_stage1(prog: SweepProgram) -> list[PlannedRun]:
    m = prog.sweep.model
    runs = [PlannedRun(run_name(m, "none", 0.0), m, "none", 0.0, lm_program(prog, m, "none", 0.0))]
    for curator in prog.sweep.curators:
        for rho in prog.sweep.ratios:
            if rho > 0:
                runs.append(PlannedRun(run_name(m, curator, rho), m, curator, rho, lm_program(prog, m, curator, rho)))
    return runs


def apart(prog: SweepProgram) -> bool:
    """Whether the comparison over seeds leaves out the runs that picked the ratios (``sweep.select_apart``,
    with more than one seed: one seed gives no test, and its table is the first seed's)."""
    return prog.sweep.select_apart and prog.sweep.seeds > 1


def replica_seeds(prog: SweepProgram) -> range:
    """The seed offsets of this sweep's replicas (`tested_replicas`)."""
    return tested_replicas(apart(prog), prog.sweep.seeds)


def plan_seed_runs(prog: SweepProgram, best: dict[str, float]) -> list[PlannedRun]:
    """Replicas with seeds ``train.seed + i`` (`replica_seeds`) of the unfiltered run, of each curator at its best
    ratio, and of random and the oracle (when swept) at those ratios.

    A replica draws again everything a run of the curator draws: the LM's init and data order
    (``train.seed``) and the curator's own draws (``curate.seed``: random's hash salt, the sample
    DSIR's raw model and the classifier's pool class are fitted on). With the salt fixed, random's
    replicas would keep the rows of one draw, and its spread over seeds, hence the test against
    it, would leave out the variance of the draw. The rater being curated is not meta-trained again."""
    m, runs, points = prog.sweep.model, [], [("none", 0.0)]
    for curator, rho in best.items():
        if rho > 0:
            points += [(curator, rho)] + [(c, rho) for c in ("random", "oracle") if c in prog.sweep.curators]
    for curator, rho in dict.fromkeys(points):
        for i in replica_seeds(prog):
            program = lm_program(prog, m, curator, rho)
            program.run_dir = str(Path(prog.run_dir) / "lm" / seed_run_name(m, i, curator, rho))
            program.train.seed += i
            program.curate.seed += i
            runs.append(PlannedRun(seed_run_name(m, i, curator, rho), m, curator, rho, program))
    return runs


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
    stage1, seeds, s = plan_stage1(prog), replica_seeds(prog), prog.sweep
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


def baseline_spread(prog: SweepProgram, stage1: list[PlannedRun], seed_runs: list[PlannedRun]) -> dict[str, list[float]]:
    """model -> final NLLs of the unfiltered runs that the comparison over seeds tests against: its seed
    replicas, after the first run when that run is in the test too (not `apart`)."""
    base = next(r for r in stage1 if r.curator == "none" and r.model == prog.sweep.model)
    replicas = [r for r in seed_runs if r.curator == "none"]
    runs = replicas if apart(prog) else [base, *replicas]
    return {base.model: [final_nll(r.program.run_dir, select_set(prog)) for r in runs]}


def select_set(prog: SweepProgram) -> str:
    """The validation set that picks the best ratio: ``sweep.select_on``, or (auto) the target's when
    a target is set, else the corpus's."""
    if prog.sweep.select_on != "auto":
        return prog.sweep.select_on
    return "target" if prog.target.mode != "heldout" else "validation"


def seed_nlls(prog: SweepProgram, runs: list[PlannedRun], set_name: str) -> dict[tuple[str, float], list[float]]:
    """(curator, ratio) -> final NLLs on ``set_name`` of the smallest model's runs over seeds."""
    out: dict[tuple[str, float], list[float]] = {}
    for r in runs:
        if r.model == prog.sweep.model:
            out.setdefault((r.curator, r.discard), []).append(final_nll(r.program.run_dir, set_name))
    return out


def best_ratio_per_curator(prog: SweepProgram, done: list[PlannedRun]) -> dict[str, float]:
    """Best discard ratio of each curator by final NLL on `select_set` on the smallest model (0 included)."""
    base = next(r for r in done if r.curator == "none" and r.model == prog.sweep.model)
    best, on = {}, select_set(prog)
    for curator in prog.sweep.curators:
        mine = [(r.discard, final_nll(r.program.run_dir, on)) for r in done
                if r.curator == curator and r.model == prog.sweep.model]
        rho = best_ratio(final_nll(base.program.run_dir, on), mine)
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
    from datarater.rundir import has_checkpoint

    left = [share_left(r) for r in runs]  # a run that resumes from a checkpoint has less than one LM to train
    was_done = [x == 0.0 for x in left]
    todo, timed = was_done.count(False), []  # (seconds, share) of each run trained here
    for i, (r, done, share) in enumerate(zip(runs, was_done, left, strict=True), 1):
        if done:
            check_same_model(r)
            note_curator_seed(r)
        elif (Path(r.program.run_dir) / "config.yaml").exists() and has_checkpoint(Path(r.program.run_dir)):
            keep_started_config(r)  # a run that got as far as a checkpoint resumes with its own config
        eta = (f" ({todo - len(timed)} to train, ETA {format_duration(phase_eta(timed, sum(left[i - 1:])))})"
               if timed and not done else "")
        say(f"[sweep] {label} {i}/{len(runs)}: {r.name}" + (" (finished earlier: reused)" if done else eta))
        if not done:
            validate_curate(r.program.curate)
            t = time.perf_counter()
            train_lm(r.program)
            timed.append((time.perf_counter() - t, share))
        if r.program.eval.tasks:
            evaluate_run_tasks(r.program)


def keep_started_config(r: PlannedRun) -> None:
    """An LM started by an earlier version of the sweep resumes as it was started, since a run's
    config does not change mid-run: with its own ``eval.curve_sets`` (before the sweep asked for a
    curve on its sweep.select_on; it then has no curve, so no net compute gain, on the sets it
    lacks) and its own ``curate.seed`` (a replica started before replicas drew the curator again)."""
    from datarater.train.load import read_program

    saved = read_program(r.program.run_dir)
    missing = [s for s in r.program.eval.curve_sets if s not in saved.eval.curve_sets]
    r.program.eval.curve_sets = list(saved.eval.curve_sets)
    if missing:
        say(f"[sweep] {r.name} was started without a curve on {', '.join(missing)}: it resumes as started, "
            "with no net compute gain on that set")
    if saved.curate.seed != r.program.curate.seed:
        say(f"[sweep] {r.name} was started with curate.seed={saved.curate.seed} (not {r.program.curate.seed}): "
            "it resumes as started")
        r.program.curate.seed = saved.curate.seed


def note_curator_seed(r: PlannedRun) -> None:
    """Says so when a finished replica is reused whose curator was not drawn again (made before
    replicas drew ``curate.seed + i``): its results stand as they are, and its seed is named."""
    from datarater.train.load import read_program

    saved = read_program(r.program.run_dir).curate.seed
    if saved != r.program.curate.seed:
        say(f"[sweep] {r.name} finished with curate.seed={saved} (a sweep now draws {r.program.curate.seed}): "
            f"reused as it is, with its curator's draws of seed {saved}")


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


def run(prog: SweepProgram) -> dict:
    from datarater.rundir import prepare_run_dir

    s = prog.sweep
    if not s.curators:
        raise UserError("config key 'sweep.curators' is empty: name curators, e.g. sweep.curators=[datarater,random]")
    run_dir, _ = prepare_run_dir(prog.run_dir, prog, may_change=("sweep.larger", "sweep.seeds", "sweep.ratios", "sweep.curators", "sweep.raters",
                                                                "sweep.rater_scores"))
    prog.run_dir = str(run_dir)
    resolve_target(prog)
    check_targets(prog)
    stage1 = plan_stage1(prog)
    for r in stage1:  # bad curator settings stop the sweep before any training
        validate_curate(r.program.curate) if r.curator != "perplexity" else None
    say(f"[sweep] {len(stage1)} runs of {s.model} ({', '.join(s.curators)} at {', '.join(f'{x:g}' for x in s.ratios)}); "
        f"best ratio by NLL on '{select_set(prog)}'")
    run_all(stage1, s.model)
    best = best_ratio_per_curator(prog, stage1)
    say("[sweep] best ratio per curator: " + ", ".join(f"{c} {rho:g}" for c, rho in best.items()))
    set_aside_comparison(prog)
    seed_runs = plan_seed_runs(prog, best)
    run_all(seed_runs, f"{s.model} other seeds (run-to-run noise)")
    spread = baseline_spread(prog, stage1, seed_runs)
    (run_dir / "baseline_spread.json").write_text(json.dumps(spread, indent=2))
    comparison = comparison_over_seeds(prog, stage1, seed_runs, best)
    stage2 = plan_stage2(prog, best)
    run_all(stage2, "larger")
    results, gains = run_results(stage1 + stage2, select_set(prog))
    write_results_csv(run_dir / "results.csv", results, gains, select_set(prog))
    md = results_markdown(results, gains, best, spread, select_set(prog))
    md += f"\n## Over seeds, on '{select_set(prog)}'\n\n" + comparison_markdown(comparison, select_set(prog), apart(prog))
    (run_dir / "results.md").write_text(md)
    (run_dir / "best_ratios.json").write_text(json.dumps(best, indent=2))
    say(md)
    return {"run_dir": str(run_dir), "best": best, "gains": gains, "select_on": select_set(prog),
            "final_val_nll": {r.name: r.final_val_nll for r in results}, "baseline_spread": spread,
            "comparison": [c.as_dict() for c in comparison]}


def set_aside_comparison(prog: SweepProgram) -> None:
    """An earlier sweep's comparison.json becomes comparison.previous.json until this one's is written: a
    report of a sweep stopped before then shows no comparison rather than one of other settings."""
    earlier, s = Path(prog.run_dir) / "comparison.json", prog.sweep
    if earlier.exists():
        if written_protocol(earlier, s.seeds) != (apart(prog), s.seeds):
            say(f"[sweep] the comparison over seeds here is now over {len(replica_seeds(prog))} replicas "
                + ("apart from" if apart(prog) else "and") + " the runs that picked the ratios (sweep.select_apart, sweep.seeds)")
        earlier.replace(earlier.with_name("comparison.previous.json"))


def comparison_over_seeds(prog: SweepProgram, stage1: list[PlannedRun], seed_runs: list[PlannedRun], best: dict) -> list:
    """Each curator at its best ratio against unfiltered and random over seeds (`compare_curators`), with its
    net compute gain: of its first replica against the unfiltered replica of that seed when `apart`, else of
    the picking run. Written to comparison.json with the protocol, before any larger model trains."""
    on, first = select_set(prog), replica_seeds(prog)[0] if apart(prog) else None
    comparison = compare_curators(seed_nlls(prog, seed_runs if first else stage1 + seed_runs, on), best)
    runs = [r for r in seed_runs if r.name.endswith(f"-seed{first}")] if first else stage1
    gains, amortised = (run_results(runs, on, count_curation=c)[1] for c in (True, False))
    for c in comparison:
        name = seed_run_name(prog.sweep.model, first, c.curator, c.ratio) if first else run_name(prog.sweep.model, c.curator, c.ratio)
        if c.ratio > 0 and name in gains:
            c.gain, c.gain_amortised = gains[name], amortised.get(name)
    (Path(prog.run_dir) / "comparison.json").write_text(json.dumps(
        {"set": on, "select_apart": apart(prog), "seeds": prog.sweep.seeds, "rows": [c.as_dict() for c in comparison]},
        indent=2, default=float))
    return comparison


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
