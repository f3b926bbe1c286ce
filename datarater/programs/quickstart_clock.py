"""The quickstart's overall ETA: the work each stage has left, at the speed this machine showed so far."""

from __future__ import annotations

import time
from collections.abc import Callable

from datarater.console import format_duration

# Seconds one unit of each stage's work took on 2 CPU cores (the quickstart's default run and its
# full=true run of 2026-12-06): building the embedded corpus; meta-training one rater (141 s toward
# the target, 121 s on the held-out split); scoring the training split with one rater; training one
# sweep LM (577 s for 16 LMs, 1625 s for 48 more); the probe of full=true; the report, per LM it reads.
REFERENCE_SECONDS = {"corpus": 20.0, "rater": 131.0, "scores": 11.0, "lm": 34.0, "probe": 470.0,
                     "report": 3.0, "report_per_lm": 1.55}


class StageClock:
    """Each stage is planned with the reference seconds of the work it has left (0 when an earlier run
    did it). The ETA is the reference seconds still ahead times this machine's speed, measured only over
    the stages that had work: a stage reused from an earlier run takes no time and says nothing about
    the speed. ``clock`` is for tests."""

    def __init__(self, plan: list[tuple[str, float]], clock: Callable[[], float] | None = None):
        self.names = [name for name, _ in plan]
        assert len(set(self.names)) == len(self.names), f"stage names repeat: {self.names}"
        self.work = dict(plan)
        self.clock = clock or time.perf_counter
        self.start = self.clock()
        self.stage_start = self.start
        self.current = 0
        self.spent = 0.0  # seconds in finished stages that had work
        self.reference_done = 0.0  # their reference seconds

    def speed(self) -> float:
        """Seconds here per reference second (1 until a stage with work has finished)."""
        return self.spent / self.reference_done if self.reference_done > 0 else 1.0

    def eta(self) -> float:
        ahead = sum(self.work[name] for name in self.names[self.current - 1:])
        return ahead * self.speed()

    def begin(self, name: str, note: str = "") -> str:
        """The line that announces stage ``name``, with the elapsed time and the overall ETA."""
        self.current = self.names.index(name) + 1
        self.stage_start = self.clock()
        elapsed = self.stage_start - self.start
        return (f"\n[quickstart] stage {self.current}/{len(self.names)}: {name}{note} "
                f"(elapsed {format_duration(elapsed)}, overall ETA {format_duration(self.eta())})")

    def end(self, worked: bool = True) -> None:
        """Close the current stage; ``worked=False`` when it turned out to reuse what an earlier run made."""
        name = self.names[self.current - 1]
        if worked and self.work[name] > 0:
            self.spent += self.clock() - self.stage_start
            self.reference_done += self.work[name]
        self.work[name] = 0.0
