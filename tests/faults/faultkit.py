"""The fault suite's helpers: the CLI in a child process, its outcome checked, a read-only folder and a small full disk."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def cli(sub: str, args: list[str], env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """``datarater SUB ARGS`` in a child process (a SIGKILL there is the real thing)."""
    return subprocess.run([sys.executable, "-m", "datarater.cli", sub, *args], env=dict(os.environ, **(env or {})),
                          capture_output=True, text=True, timeout=timeout)


def clear_error(r: subprocess.CompletedProcess, *needles: str) -> str:
    """Asserts a run ended in one clear error line (exit 2, no traceback) containing ``needles``; returns it."""
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    line = [ln for ln in r.stderr.splitlines() if ": error: " in ln][-1]
    for n in needles:
        assert n in line, (n, line)
    return line


def killed(r: subprocess.CompletedProcess) -> None:
    assert r.returncode == -9, (r.returncode, r.stderr[-3000:])


def ok(r: subprocess.CompletedProcess) -> None:
    assert r.returncode == 0, r.stderr[-3000:]


def read_rows(run_dir: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if ln.strip()]


def metric_rows(run_dir: Path, drop: tuple[str, ...] = ("tokens_per_s", "mfu", "step_time_s", "steps_per_s")) -> list[dict]:
    """The metric rows without timings (which differ run to run)."""
    return [{k: v for k, v in r.items() if k not in drop} for r in read_rows(run_dir)]


@contextlib.contextmanager
def _privileged(do: list[str], undo: list[str], cannot: str):
    """Runs ``do`` for the duration of the block and ``undo`` after it; skips the test (saying
    ``cannot`` and why) where the machine does not allow ``do``."""
    r = subprocess.run(do, capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"{cannot} ({' '.join(do[:2])}: {r.stderr.strip()})")
    try:
        yield
    finally:
        subprocess.run(undo, capture_output=True)


@contextlib.contextmanager
def read_only(path: Path):
    """``path`` unwritable even for root (the immutable attribute), for the duration."""
    with _privileged(["chattr", "+i", str(path)], ["chattr", "-i", str(path)], "cannot make a folder read-only here"):
        yield path


@contextlib.contextmanager
def small_disk(path: Path, mib: int):
    """A tmpfs of ``mib`` MiB mounted at ``path`` (a full disk is then a real ENOSPC)."""
    path.mkdir(parents=True, exist_ok=True)
    with _privileged(["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", str(path)], ["umount", "-l", str(path)],
                     "cannot mount a small tmpfs here; the simulated ENOSPC tests still run"):
        yield path


def refused_on_a_full_disk(command: str, argv: list[str], run: Path, disk: Path, after_step: int,
                           leave_kib: int) -> Path:
    """Kills ``command`` after its checkpoint of ``after_step``, fills ``disk`` to ``leave_kib``
    KiB free and runs it again: asserts the clear error naming the checkpoint folder. Returns the
    filler file (unlink it to free the space)."""
    from datarater import faults

    killed(cli(command, argv, {faults.AFTER_CHECKPOINT: str(after_step)}))
    filler = fill(disk, leave_kib)
    clear_error(cli(command, argv), f"checkpoint folder {run / 'checkpoints'} has", "MiB free")
    return filler


def fill(path: Path, leave_kib: int) -> Path:
    """Fills the filesystem of ``path`` up to ``leave_kib`` KiB free with one file; returns it."""
    free_kib = os.statvfs(path).f_bavail * os.statvfs(path).f_frsize // 1024
    filler = path / "filler"
    with filler.open("wb") as f:
        f.truncate(0)
        chunk = b"\0" * (1 << 20)
        left = max(0, free_kib - leave_kib) * 1024
        while left > 0:
            n = min(left, len(chunk))
            f.write(chunk[:n])
            left -= n
    return filler


