"""`datarater quickstart`: the whole method on the embedded noisy corpus, in one run directory.

    RUN/meta/             meta-train a rater toward the target (meta.target: the clean documents)
    RUN/meta_samecorpus/  full=true: the paper's same-corpus rater (outer loss on the held-out split)
    RUN/scores*/          each rater's scores of every training sequence (parquet side files)
    RUN/sweep/            nano LMs at each discard ratio per curator, then 3 more seeds at the best ratios
    RUN/probe/            full=true: what each objective wants (outer loss, uniform vs oracle weights)
    RUN/report.md         what was learned (audit against the corruption labels) and what it saved

Each stage resumes or is skipped when it finished before, so rerunning continues where it stopped.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

from datarater.config import (
    MetaTrainProgram,
    ModelCompute,
    QuickstartProgram,
    ReportProgram,
    ScoreProgram,
    SweepConfig,
    SweepProgram,
    TargetConfig,
)
from datarater.config.curate import CurateConfig, ScoreConfig
from datarater.config.eval import EvalConfig
from datarater.console import format_duration, say
from datarater.programs.quickstart_clock import REFERENCE_SECONDS, StageClock
from datarater.rundir import prepare_run_dir

SAMECORPUS = "datarater_samecorpus"


def meta_program(prog: QuickstartProgram, run: Path, samecorpus: bool = False) -> MetaTrainProgram:
    """The targeted rater (meta.target), or with ``samecorpus`` the paper's (the held-out split)."""
    meta = copy.deepcopy(prog.meta)
    if samecorpus:
        meta.target = TargetConfig()
    return MetaTrainProgram(run_dir=str(run / ("meta_samecorpus" if samecorpus else "meta")), model=prog.model,
                            rater=prog.rater, corpus=prog.corpus, data=prog.data, train=prog.inner, meta=meta,
                            mesh=prog.mesh)


def score_program(prog: QuickstartProgram, run: Path, samecorpus: bool = False) -> ScoreProgram:
    meta, out = ("meta_samecorpus", "scores_samecorpus") if samecorpus else ("meta", "scores")
    return ScoreProgram(run_dir=str(run / out), curate=CurateConfig(name="datarater", rater_run=str(run / meta)),
                        corpus=prog.corpus, data=prog.data, score=ScoreConfig(unit="sequence", split="train", batch_size=64),
                        mesh=prog.mesh)


def sweep_program(prog: QuickstartProgram, run: Path) -> SweepProgram:
    q = prog.quickstart
    curate = CurateConfig(rater_run=str(run / "meta"), scores=str(run / "scores"))
    ratios, curators = (q.full_ratios, q.full_curators) if q.full else (q.ratios, q.curators)
    raters = {SAMECORPUS: str(run / "meta_samecorpus")} if SAMECORPUS in curators else {}
    scores = {SAMECORPUS: str(run / "scores_samecorpus")} if raters else {}
    return SweepProgram(run_dir=str(run / "sweep"), corpus=prog.corpus, data=prog.data, train=prog.train,
                        mesh=prog.mesh, curate=curate, eval=EvalConfig(), target=copy.deepcopy(prog.meta.target),
                        sweep=SweepConfig(model=prog.model.name, larger=[], ratios=list(ratios), curators=list(curators),
                                          seeds=q.seeds, compute=ModelCompute.of(prog.model), raters=raters,
                                          rater_scores=scores))


def rater_done(meta: MetaTrainProgram) -> bool:
    return (Path(meta.run_dir) / "rater").exists() and (Path(meta.run_dir) / "summary.json").exists()


def plan_stages(prog: QuickstartProgram, run: Path, raters: list[bool], sw: SweepProgram) -> list[tuple[str, float]]:
    """Each stage with the reference seconds of the work it has left (`quickstart_clock`); ``sw`` is
    the sweep stage's program."""
    from datarater.programs.sweep_plan import lms_left

    ref = REFERENCE_SECONDS
    untrained = sum(not rater_done(meta_program(prog, run, sc)) for sc in raters)
    unscored = sum(not (Path(score_program(prog, run, sc).run_dir) / "summary.json").exists() for sc in raters)
    to_train, in_all = lms_left(sw)
    return [("corpus", ref["corpus"]), ("meta-train", ref["rater"] * untrained), ("score", ref["scores"] * unscored),
            ("sweep", ref["lm"] * to_train), ("probe", ref["probe"] if prog.quickstart.full else 0.0),
            ("report", ref["report"] + ref["report_per_lm"] * in_all)]


def run(prog: QuickstartProgram) -> dict:
    from datarater.data.corpus import load_splits
    from datarater.data.documents import ReadStats
    from datarater.data.tokenizer import make_tokenizer
    from datarater.programs import meta_train, report, score, sweep

    run, _ = prepare_run_dir(prog.run_dir, prog, may_change=("quickstart.seeds", "quickstart.full"))
    sw = sweep_program(prog, run)
    raters = [False] + ([True] if SAMECORPUS in sw.sweep.curators else [])
    clock = StageClock(plan_stages(prog, run, raters, sw))
    timings: dict[str, float] = {}

    def timed(name: str, fn):
        t = time.perf_counter()
        out = fn()
        timings[name] = time.perf_counter() - t
        return out

    say(clock.begin("corpus", f" ({prog.corpus.name})"))
    stats, built = ReadStats(), []

    def on_build(msg: str) -> None:
        built.append(msg)
        say(msg)

    timed("corpus", lambda: load_splits(prog.corpus, prog.data, make_tokenizer(prog.data), splits=("heldout",), stats=stats, on_build=on_build))
    say(f"[quickstart] {stats.summary()}")
    clock.end(worked=bool(built))

    say(clock.begin("meta-train", f" {len(raters)} rater(s), {prog.meta.steps} steps each"))
    for samecorpus in raters:
        meta = meta_program(prog, run, samecorpus)
        if not rater_done(meta):
            say(f"[quickstart] rater with the outer loss on {meta.meta.target.describe()}")
            timed("meta-train" + ("_samecorpus" if samecorpus else ""), lambda m=meta: meta_train.run(m))
    clock.end()

    say(clock.begin("score", " the training split with each rater"))
    for samecorpus in raters:
        timed("score" + ("_samecorpus" if samecorpus else ""), lambda sc=samecorpus: score.run(score_program(prog, run, sc)))
    clock.end()

    say(clock.begin("sweep", f" ratios {sw.sweep.ratios} x curators {sw.sweep.curators}, then {sw.sweep.seeds} more seeds at the best"))
    result = timed("sweep", lambda: sweep.run(sw))
    clock.end()

    say(clock.begin("probe", "" if prog.quickstart.full else " (full=true only)"))
    if prog.quickstart.full:
        timed("probe", lambda: run_probe(prog, run))
    clock.end()

    say(clock.begin("report"))
    notes = ["quickstart stage times (s), summed over the runs in this folder (the probe: the last run's): "
             + ", ".join(f"{k} {v:.0f}" for k, v in stage_times(run, timings).items())]
    path = timed("report", lambda: report.run(ReportProgram(run_dir=str(run), rater_run=str(run / "meta"),
                                                        rows=prog.quickstart.report_rows), notes=notes))
    clock.end()
    total = time.perf_counter() - clock.start
    summary = {"report": str(path), "seconds": total, "stages": stage_times(run, timings), **result}
    (run / "quickstart.json").write_text(json.dumps(summary, indent=2, default=str))
    say(f"\n[quickstart] done in {format_duration(total)}: open {path}")
    return summary


def stage_times(run: Path, timings: dict[str, float]) -> dict[str, float]:
    """Seconds per stage over every run in this folder: a stage that resumes adds this run's time to the
    earlier ones' (a rerun that reused everything adds about nothing), while the probe and the report,
    done again each time, keep this run's."""
    try:
        earlier = {k: float(v) for k, v in json.loads((run / "quickstart.json").read_text())["stages"].items()
                   if isinstance(v, int | float)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # none yet, or not one we wrote
        earlier = {}
    redone = ("probe", "report")
    return {**earlier, **{k: v if k in redone else earlier.get(k, 0.0) + v for k, v in timings.items()}}


def run_probe(prog: QuickstartProgram, run: Path) -> None:
    """The probe of what each objective wants (`datarater.meta.probe`), rejecting every corrupted
    kind and each kind alone (what the audit can expect the rater to learn), written to RUN/probe/."""
    from datarater.programs.probe import probe_objective

    probe_objective(prog, run / "probe", ages=list(prog.quickstart.probe_ages), each=True)
