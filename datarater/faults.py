"""Fault injection for the fault suite (`tests/faults/`): environment variables that SIGKILL this process at a chosen point, as a preempted VM.

Unset (the normal case) they cost one environment lookup. The training loop reads the step
ones (`datarater.train.loop`), scoring and filtering the file one. The NaN injection of
meta-training is `datarater.meta.state.nan_injection`.
"""

from __future__ import annotations

import os
import signal

AFTER_CHECKPOINT = "DATARATER_SIGKILL_AFTER_CHECKPOINT"  # once the checkpoint of step N is on disk
AT_STEP = "DATARATER_SIGKILL_AT_STEP"  # in step N, after its update, before its hooks and save
DURING_SAVE = "DATARATER_SIGKILL_DURING_SAVE"  # while the checkpoint of step N is being written
AFTER_FILES = "DATARATER_SIGKILL_AFTER_FILES"  # score / filter: once N output files of this invocation are written


def env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def kill() -> None:
    """SIGKILL this process: no clean-up, no atexit, no flush."""
    os.kill(os.getpid(), signal.SIGKILL)


def after_files(done: int) -> None:
    """Called with the number of output files written so far; kills at ``$DATARATER_SIGKILL_AFTER_FILES``."""
    if env_int(AFTER_FILES) == done:
        kill()
