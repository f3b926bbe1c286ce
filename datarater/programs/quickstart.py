"""`datarater quickstart`: the whole method on the embedded noisy corpus, in one run directory.

    RUN/meta/      meta-train a rater (nano) on the corpus
    RUN/scores/    its scores of every training sequence (parquet side files)
    RUN/sweep/     nano LMs at each discard ratio for the DataRater and the baseline curators
    RUN/report.md  what was learned (audit against the corruption labels) and what it saved

Each stage resumes or is skipped when it finished before, so rerunning continues where it stopped.
"""

from __future__ import annotations

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
)
from datarater.config.curate import CurateConfig, ScoreConfig
from datarater.config.eval import EvalConfig
from datarater.console import format_duration, say
from datarater.rundir import prepare_run_dir

# Rough share of the wall time of each stage on 2 CPU cores, for the overall ETA.
STAGES = (("corpus", 0.03), ("meta-train", 0.35), ("score", 0.10), ("sweep", 0.45), ("report", 0.07))


class StageClock:
    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.done = 0.0

    def begin(self, i: int, name: str, note: str = "") -> None:
        elapsed = time.perf_counter() - self.start
        eta = f", overall ETA {format_duration(elapsed / self.done * (1 - self.done))}" if self.done > 0 else ""
        say(f"\n[quickstart] stage {i}/{len(STAGES)}: {name}{note} (elapsed {format_duration(elapsed)}{eta})")

    def end(self, share: float) -> None:
        self.done += share


def meta_program(prog: QuickstartProgram, run: Path) -> MetaTrainProgram:
    return MetaTrainProgram(run_dir=str(run / "meta"), model=prog.model, rater=prog.rater, corpus=prog.corpus,
                            data=prog.data, train=prog.inner, meta=prog.meta, mesh=prog.mesh)


def score_program(prog: QuickstartProgram, run: Path) -> ScoreProgram:
    return ScoreProgram(run_dir=str(run / "scores"), curate=CurateConfig(name="datarater", rater_run=str(run / "meta")),
                        corpus=prog.corpus, data=prog.data, score=ScoreConfig(unit="sequence", split="train", batch_size=16),
                        mesh=prog.mesh)


def sweep_program(prog: QuickstartProgram, run: Path) -> SweepProgram:
    curate = CurateConfig(rater_run=str(run / "meta"), scores=str(run / "scores"))
    return SweepProgram(run_dir=str(run / "sweep"), corpus=prog.corpus, data=prog.data, train=prog.train,
                        mesh=prog.mesh, curate=curate, eval=EvalConfig(),
                        sweep=SweepConfig(model=prog.model.name, larger=[], ratios=list(prog.quickstart.ratios),
                                          curators=list(prog.quickstart.curators),
                                          seeds=prog.quickstart.seeds,
                                          compute=ModelCompute.of(prog.model)))


def run(prog: QuickstartProgram) -> dict:
    from datarater.data.corpus import load_splits
    from datarater.data.documents import ReadStats
    from datarater.data.tokenizer import make_tokenizer
    from datarater.programs import meta_train, report, score, sweep

    run, _ = prepare_run_dir(prog.run_dir, prog, may_change=("quickstart.seeds",))
    clock = StageClock()
    timings: dict[str, float] = {}

    def timed(name: str, fn):
        t = time.perf_counter()
        out = fn()
        timings[name] = time.perf_counter() - t
        return out

    clock.begin(1, "corpus", f" ({prog.corpus.name})")
    stats = ReadStats()
    timed("corpus", lambda: load_splits(prog.corpus, prog.data, make_tokenizer(prog.data), splits=("heldout",), stats=stats, on_build=say))
    say(f"[quickstart] {stats.summary()}")
    clock.end(STAGES[0][1])

    meta = meta_program(prog, run)
    finished = (run / "meta" / "rater").exists() and (run / "meta" / "summary.json").exists()
    clock.begin(2, "meta-train", f" {prog.meta.steps} steps" + (" (finished earlier)" if finished else ""))
    if not finished:
        timed("meta-train", lambda: meta_train.run(meta))
    clock.end(STAGES[1][1])

    clock.begin(3, "score", " the training split with the rater")
    timed("score", lambda: score.run(score_program(prog, run)))
    clock.end(STAGES[2][1])

    clock.begin(4, "sweep", f" ratios {list(prog.quickstart.ratios)} x curators {list(prog.quickstart.curators)}")
    result = timed("sweep", lambda: sweep.run(sweep_program(prog, run)))
    clock.end(STAGES[3][1])

    clock.begin(5, "report")
    notes = ["quickstart stage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items())]
    path = timed("report", lambda: report.run(ReportProgram(run_dir=str(run), rater_run=str(run / "meta"),
                                                        rows=prog.quickstart.report_rows), notes=notes))
    clock.end(STAGES[4][1])
    total = time.perf_counter() - clock.start
    summary = {"report": str(path), "seconds": total, "stages": timings, **result}
    (run / "quickstart.json").write_text(json.dumps(summary, indent=2, default=str))
    say(f"\n[quickstart] done in {format_duration(total)}: open {path}")
    return summary
