"""The one console: messages and progress lines for people on stderr (process 0 only), durations.

Programs (``datarater.programs``) talk to the user through this module; the library below them
never prints. stdout carries only output meant for other programs or files (tables a user
redirects, ``plan``'s result line): `result` writes it.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any

import jax


def is_main_process() -> bool:
    """Whether this is JAX process 0, the one that writes shared files and talks to the user."""
    return jax.process_index() == 0


def say(msg: str) -> None:
    """One line for the user on stderr, from process 0."""
    if is_main_process():
        print(msg, file=sys.stderr, flush=True)


def result(text: str) -> None:
    """Machine-readable output (or a table meant to be redirected) on stdout, from process 0."""
    if is_main_process():
        print(text, flush=True)


def format_duration(seconds: float) -> str:
    """``M:SS`` under an hour, ``H:MM:SS`` from one; ``?`` when unknown."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """A progress line per call, or at most one every ``every`` seconds (and always the last):
    step, the fields given, ETA (stderr, process 0). ``clock`` is for tests."""

    def __init__(self, total_steps: int, start_step: int = 0, label: str = "train", every: float = 0.0,
                 clock: Callable[[], float] | None = None):
        self.total = total_steps
        self.start_step = start_step
        self.label = label
        self.every = every
        self.clock = clock or time.perf_counter
        self.t0 = self.clock()
        self.shown_at = -math.inf

    def eta(self, step: int) -> float:
        done = step - self.start_step
        if done <= 0:
            return math.inf
        return (self.clock() - self.t0) / done * (self.total - step)

    def line(self, step: int, eta: float | None = None, **fields: Any) -> str:
        """The line at ``step``; ``eta`` (seconds) when the caller knows better than the mean rate."""
        parts = [f"[{self.label}] step {step}/{self.total}"]
        for k, v in fields.items():
            if v is None:
                continue
            parts.append(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}")
        parts.append(f"ETA {format_duration(self.eta(step) if eta is None else eta)}")
        return " | ".join(parts)

    def show(self, step: int, eta: float | None = None, **fields: Any) -> None:
        now = self.clock()
        if now - self.shown_at < self.every and step < self.total:
            return
        self.shown_at = now
        say(self.line(step, eta, **fields))


class KindRates:
    """Time left for work of several kinds, each at its own measured rate (a probe's cheap aging
    steps and its costlier look-aheads): the time between two `update` calls goes to the kinds
    that advanced, in proportion to their units. A kind's first such interval holds its warm-up (XLA
    compiling its step), so its rate comes from the later ones as soon as there are any; a kind not
    timed yet goes at the mean rate of those that are."""

    def __init__(self, totals: dict[str, int], clock: Callable[[], float] | None = None):
        self.totals = dict(totals)
        self.clock = clock or time.perf_counter
        self.done = dict.fromkeys(totals, 0)
        self.spent = dict.fromkeys(totals, 0.0)  # seconds after each kind's warm-up
        self.timed = dict.fromkeys(totals, 0)  # units after each kind's warm-up
        self.warmup: dict[str, tuple[float, int]] = {}  # kind -> (seconds, units) of its first interval
        self.at = self.clock()

    def update(self, done: dict[str, int]) -> None:
        now = self.clock()
        moved = {k: done[k] - self.done[k] for k in self.totals}
        units = sum(moved.values())
        if units > 0:  # else the time goes to the next work done
            warming = any(n > 0 and k not in self.warmup for k, n in moved.items())
            for k, n in moved.items():
                if n <= 0:
                    continue
                share = (now - self.at) * n / units
                if k not in self.warmup:
                    self.warmup[k] = (share, n)
                elif not warming:  # an interval that holds another kind's warm-up times none
                    self.spent[k] += share
                    self.timed[k] += n
            self.at = now
        self.done.update(done)

    def rate(self, kind: str) -> float | None:
        """Seconds per unit of ``kind``: after its warm-up, else over its warm-up, else unknown."""
        if self.timed[kind]:
            return self.spent[kind] / self.timed[kind]
        if kind in self.warmup:
            return self.warmup[kind][0] / self.warmup[kind][1]
        return None

    def eta(self) -> float:
        if not self.warmup:
            return math.inf
        timed = sum(self.timed.values())
        mean = (sum(self.spent.values()) / timed if timed else
                sum(s for s, _ in self.warmup.values()) / sum(n for _, n in self.warmup.values()))
        rates = {k: self.rate(k) for k in self.totals}
        return sum((self.totals[k] - n) * (mean if rates[k] is None else rates[k]) for k, n in self.done.items())
