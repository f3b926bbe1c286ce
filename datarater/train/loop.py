"""The one training loop: steps, hooks every N steps, checkpoints, resume, interrupt and final save.

Both `train-lm` and `meta-train` run in it (as Levanter's ``Trainer`` with its hooks): the program
gives a step function and a snapshot of what a checkpoint holds, and adds hooks for everything
else (metrics rows, the progress line, evaluation, member re-initialisation). The loop itself

- restores the latest finished checkpoint onto an abstract state (`Loop.restore`) and drops the
  metric rows written after it, which the resumed run writes again;
- calls the step function, then each hook whose period divides the step (and, unless a hook
  says otherwise, every hook at the last step), in the order they were added;
- saves a checkpoint every ``checkpoint_every`` steps and at the last step, then runs the
  ``after_save`` hooks (the fault injection of the resume tests is one, `sigkill_after_checkpoint`);
- on Ctrl-C finishes the step under way and its hooks, saves a checkpoint of it, closes the
  checkpointer and raises ``KeyboardInterrupt`` (`Loop.interrupted_at` says which step); a second
  Ctrl-C stops at once, keeping the last checkpoint.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import jax

from datarater import faults
from datarater.train.checkpoint import Checkpointer
from datarater.train.metrics import MetricsFile


@dataclass
class Hook:
    fn: Callable[[int, Any], None]  # (steps done, what the step function returned)
    every: int
    at_last: bool = True


@dataclass
class Restored:
    """What `Loop.restore` found: the step to start from, and the checkpoint's arrays and JSON items."""

    step: int = 0
    state: Any = None
    extra: dict = field(default_factory=dict)
    dropped_rows: int = 0  # metric rows after the checkpoint, dropped to be written again
    warnings: list[str] = field(default_factory=list)  # damaged checkpoints set aside (the program says them)

    @property
    def found(self) -> bool:
        return self.state is not None


@contextmanager
def deferred_interrupt() -> Iterator[list[bool]]:
    """While active, a first SIGINT only sets the flag yielded (``flag[0]``) and puts the previous
    handler back, so a second one interrupts at once. Outside the main thread: no handler. A process
    that inherited SIGINT ignored (a background job of a script) is stopped the same way: after a
    first SIGINT the second raises, where putting "ignored" back would have made it never stop at
    once; the inherited handling is put back when the loop ends."""
    flag = [False]
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.getsignal(signal.SIGINT)
    second = previous if callable(previous) else signal.default_int_handler

    def handler(signum, frame):
        flag[0] = True
        signal.signal(signal.SIGINT, second)

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def sigkill_after_checkpoint(ckpt: Checkpointer) -> Callable[[int], None]:
    """Fault injection for the resume tests: SIGKILL this process once the checkpoint of step
    ``$DATARATER_SIGKILL_AFTER_CHECKPOINT`` is on disk (no clean-up, as a preempted VM). With several
    processes, process 0 goes 2 s after the others: it hosts the coordination service, and dying
    first it would leave another process still leaving the save's last barrier to exit on "Socket
    closed" rather than be killed, as a slice's preempted hosts are."""

    def hook(step: int) -> None:
        if faults.env_int(faults.AFTER_CHECKPOINT) == step:
            ckpt.wait()
            if jax.process_count() > 1 and jax.process_index() == 0:
                time.sleep(2.0)
            faults.kill()

    return hook


class Loop:
    """``total_steps`` steps with hooks; checkpoints through ``ckpt`` every ``checkpoint_every`` steps.

    ``snapshot(step) -> (arrays, extra)`` gives what a checkpoint of ``step`` holds (a pytree of
    arrays and a JSON-serialisable dict); the loop adds ``extra["step"]``.
    """

    def __init__(self, ckpt: Checkpointer, metrics: MetricsFile, total_steps: int, checkpoint_every: int,
                 snapshot: Callable[[int], tuple[Any, dict]]):
        self.ckpt, self.metrics = ckpt, metrics
        self.total, self.checkpoint_every = total_steps, checkpoint_every
        self.snapshot = snapshot
        self.hooks: list[Hook] = []
        self.step = 0  # the last step taken
        self.interrupted_at: int | None = None  # the step checkpointed on Ctrl-C
        self.after_save: list[Callable[[int], None]] = [sigkill_after_checkpoint(ckpt)]

    def add_hook(self, fn: Callable[[int, Any], None], every: int = 1, at_last: bool = True) -> None:
        self.hooks.append(Hook(fn, every, at_last))

    def restore(self, abstract_state: Any) -> Restored:
        """The latest finished checkpoint restored onto ``abstract_state`` (ShapeDtypeStructs with
        shardings), metric rows after it dropped; none found: step 0, and the metrics file of an
        earlier attempt that reached no checkpoint is removed (its rows are written again)."""
        found = self.ckpt.restore_latest(abstract_state)
        if found is None:
            if self.metrics.enabled and self.metrics.path.exists():  # rows of an attempt that saved nothing
                self.metrics.path.unlink()
            return Restored(warnings=list(self.ckpt.warnings))
        latest, state, extra = found
        return Restored(step=int(latest), state=state, extra=extra, dropped_rows=self.metrics.truncate_after(latest),
                        warnings=list(self.ckpt.warnings))

    def save(self, step: int) -> None:
        arrays, extra = self.snapshot(step)
        self.ckpt.save(step, arrays, {**extra, "step": step})

    def run(self, start: int, step_fn: Callable[[int], Any]) -> int:
        """Steps ``start + 1 .. total_steps``; ``step_fn(step)`` takes step ``step`` (1-based) and
        returns what the hooks receive. Returns the step reached; the checkpointer is closed."""
        step = self.step = start
        kill_at, kill_in_save = faults.env_int(faults.AT_STEP), faults.env_int(faults.DURING_SAVE)
        with deferred_interrupt() as interrupted:
            try:
                while step < self.total:
                    self.ckpt.check()  # a background save that failed stops the run here
                    out = step_fn(step + 1)
                    step = self.step = step + 1
                    if step == kill_at:
                        faults.kill()
                    last = step == self.total
                    for hook in self.hooks:
                        if step % hook.every == 0 or (last and hook.at_last):
                            hook.fn(step, out)
                    if step % self.checkpoint_every == 0 or last:
                        self.save(step)
                        if step == kill_in_save:
                            faults.kill()  # the save was started asynchronously: its files are half-written
                        for fn in self.after_save:
                            fn(step)
                    elif interrupted[0]:
                        self.save(step)
                    if interrupted[0] and not last:
                        self.interrupted_at = step
                        raise KeyboardInterrupt
            finally:
                self.ckpt.close()
        return step
