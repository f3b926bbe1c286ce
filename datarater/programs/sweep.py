"""`datarater sweep`: discard-ratio sweep per curator, best ratio on the smallest model, then larger.

    RUN/lm/<model>-<curator>-<ratio>/   one train-lm run each (reused when already finished)
    RUN/lm/<run>-seed<i>/               a run again with train.seed + i and curate.seed + i: the
                                        grid again for i < sweep.select_seeds (the picking seeds),
                                        then the replicas (i = k .. k + sweep.seeds - 1, k the picking
                                        seeds): the unfiltered LM and each curator at its best ratio,
                                        with random and the oracle at that ratio (the comparison's seeds)
    RUN/results.csv, RUN/results.md     one row per run: final NLL per validation set, delta, net
                                        compute gain, tasks; then the comparison over seeds
    RUN/comparison.json                 mean ± 95% CI per curator, Welch tests, gap closed
    RUN/baseline_spread.json            final NLLs of the unfiltered runs over those seeds

1. the smallest preset (``sweep.model``) unfiltered, then at every ratio of ``sweep.ratios`` for
   every curator of ``sweep.curators``;
2. the best ratio per curator by final NLL on ``sweep.select_on`` (the target's validation set when
   a target is set, else the corpus's) on that model (docs/method.md, "Downstream LMs and the protocol"),
   its mean over ``sweep.select_seeds`` seeds of the grid (1 by default: step 1's runs);
3. the seed replicas of step 2's runs and of the unfiltered run (``sweep.seeds``). With
   ``sweep.select_apart`` (the default) the comparison over seeds uses only the replicas: the run
   that picked a ratio is not also in the test of it, which would favour whichever ratio had a
   lucky first seed (a winner's curse). Without it (the sweeps before 2026-12-06), the first seed
   picks and is tested, and ``sweep.seeds`` counts it;
4. each preset of ``sweep.larger`` unfiltered and at each curator's best ratio.
Every run has the same steps and batch, so runs compare at equal training compute.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from datarater.config import SweepProgram, TrainLMProgram
from datarater.config.curate import validate_curate
from datarater.console import format_duration, say
from datarater.errors import UserError
from datarater.eval.compare import compare_curators, comparison_markdown
from datarater.eval.report.analysis import at_largest_ratio
from datarater.eval.report.tables import edge_note, results_markdown, write_results_csv
from datarater.programs.sweep_plan import (
    apart,
    best_ratio_per_curator,
    check_targets,
    picking_nlls,
    plan_picking,
    plan_seed_runs,
    plan_stage1,
    plan_stage2,
    replica_seeds,
    resolve_target,
    select_set,
)
from datarater.programs.sweep_runs import (
    PlannedRun,
    final_nll,
    phase_eta,
    run_name,
    run_results,
    seed_run_name,
    share_left,
    written_protocol,
)


def baseline_spread(prog: SweepProgram, stage1: list[PlannedRun], seed_runs: list[PlannedRun]) -> dict[str, list[float]]:
    """model -> final NLLs of the unfiltered runs that the comparison over seeds tests against: its seed
    replicas, after the first run when that run is in the test too (not `apart`)."""
    base = next(r for r in stage1 if r.curator == "none" and r.model == prog.sweep.model)
    replicas = [r for r in seed_runs if r.curator == "none"]
    runs = replicas if apart(prog) else [base, *replicas]
    return {base.model: [final_nll(r.program.run_dir, select_set(prog)) for r in runs]}


def seed_nlls(prog: SweepProgram, runs: list[PlannedRun], set_name: str) -> dict[tuple[str, float], list[float]]:
    """(curator, ratio) -> final NLLs on ``set_name`` of the smallest model's runs over seeds."""
    out: dict[tuple[str, float], list[float]] = {}
    for r in runs:
        if r.model == prog.sweep.model:
            out.setdefault((r.curator, r.discard), []).append(final_nll(r.program.run_dir, set_name))
    return out


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
                                                                "sweep.rater_scores", "sweep.select_seeds"))
    prog.run_dir = str(run_dir)
    resolve_target(prog)
    check_targets(prog)
    stage1 = plan_stage1(prog)
    for r in stage1:  # bad curator settings stop the sweep before any training
        validate_curate(r.program.curate) if r.curator != "perplexity" else None
    picking = plan_picking(prog)
    say(f"[sweep] {len(stage1 + picking)} runs of {s.model} ({', '.join(s.curators)} at {', '.join(f'{x:g}' for x in s.ratios)}"
        + (f", {s.select_seeds} seeds each" if picking else "") + f"); best ratio by NLL on '{select_set(prog)}'")
    run_all(stage1 + picking, s.model + (f" ({s.select_seeds} seeds pick the ratios)" if picking else ""))
    best = best_ratio_per_curator(prog, stage1 + picking)
    say("[sweep] best ratio per curator" + (f" (mean over {s.select_seeds} seeds)" if picking else "") + ": "
        + ", ".join(f"{c} {rho:g}" for c, rho in best.items()))
    # written once the ratios are picked: what `datarater report` shows, while the replicas train too
    (run_dir / "best_ratios.json").write_text(json.dumps(best, indent=2))
    if note := edge_note(at_largest_ratio(best, {c: s.ratios for c in s.curators})):
        say(f"[sweep] {note}")
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
    md = results_markdown(results, gains, best, spread, select_set(prog)) + picking_markdown(prog, stage1 + picking)
    md += f"\n## Over seeds, on '{select_set(prog)}'\n\n" + comparison_markdown(comparison, select_set(prog), apart(prog))
    (run_dir / "results.md").write_text(md)
    say(md)
    return {"run_dir": str(run_dir), "best": best, "gains": gains, "select_on": select_set(prog),
            "final_val_nll": {r.name: r.final_val_nll for r in results}, "baseline_spread": spread,
            "comparison": [c.as_dict() for c in comparison]}


def picking_markdown(prog: SweepProgram, runs: list[PlannedRun]) -> str:
    """With more than one picking seed (`sweep.select_seeds`), the mean final NLL of each point that
    picked the ratios (the table above is the first seed's); else nothing."""
    k = prog.sweep.select_seeds
    if k < 2:
        return ""
    lines = [f"\nThe best ratios were picked on the mean final NLL on '{select_set(prog)}' over seeds train.seed + 0 .. "
             f"+ {k - 1} (sweep.select_seeds):\n", "| curator | discard | mean final NLL |", "|---|---|---|"]
    lines += [f"| {c} | {rho:g} | {nll:.4f} |" for (c, rho), nll in picking_nlls(prog, runs).items()]
    return "\n".join(lines) + "\n"


def set_aside_comparison(prog: SweepProgram) -> None:
    """An earlier sweep's comparison.json becomes comparison.previous.json until this one's is written: a
    report of a sweep stopped before then shows no comparison rather than one of other settings."""
    earlier, s = Path(prog.run_dir) / "comparison.json", prog.sweep
    if earlier.exists():
        if written_protocol(earlier, s.seeds) != (apart(prog), s.seeds, s.select_seeds):
            say(f"[sweep] the comparison over seeds here is now over {len(replica_seeds(prog))} replicas "
                + ("apart from" if apart(prog) else "and") + f" the runs of {s.select_seeds} seeds that picked the ratios "
                "(sweep.select_apart, sweep.seeds, sweep.select_seeds)")
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
        {"set": on, "select_apart": apart(prog), "seeds": prog.sweep.seeds, "select_seeds": prog.sweep.select_seeds, "rows": [c.as_dict() for c in comparison]},
        indent=2, default=float))
    return comparison
