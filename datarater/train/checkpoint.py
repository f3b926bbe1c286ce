"""Orbax checkpoints of a training state (arrays) plus JSON side items (data iterator, step).

One ``CheckpointManager`` per run directory, saving asynchronously; a run started again in the
same directory restores the latest finished checkpoint that can be read, setting damaged ones
aside. Arrays are restored onto the shardings of an abstract target, so a run may resume on a
different device count. The folder is probed for writability at start, and a background save
that fails stops the run at the next step with the folder named.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from datarater.errors import UserError


def probe_writable(directory: Path) -> None:
    """Creates ``directory`` and writes and removes a file in it; `UserError` naming it if it cannot."""
    probe = directory / f".write-probe-{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise UserError(f"checkpoint folder {directory} is not writable ({e.strerror or e}): "
                        "free space or fix its permissions, or use another run_dir") from None


def set_aside(path: Path) -> Path:
    """Renames a bad checkpoint step folder ``N`` to ``N.corrupt`` (``N.corrupt-2``, ...): kept for
    inspection, and no longer a step orbax lists."""
    for i in range(1, 1000):
        dest = path.with_name(f"{path.name}.corrupt" + (f"-{i}" if i > 1 else ""))
        if not dest.exists():
            path.rename(dest)
            return dest
    raise UserError(f"cannot set aside the bad checkpoint {path}: too many earlier ones beside it")


class Checkpointer:
    def __init__(self, directory: Path, keep: int, read_only: bool = False):
        self.directory = Path(directory).absolute()
        if jax.process_index() == 0 and not read_only:
            probe_writable(self.directory)
            for partial in self.directory.glob("*.orbax-checkpoint-tmp*"):  # a save that was killed or failed
                shutil.rmtree(partial, ignore_errors=True)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None if read_only else keep,  # orbax warns of both when read-only, and ignores them
            save_interval_steps=0 if read_only else 1,  # the caller decides when to save
            create=not read_only,
            enable_async_checkpointing=True,
            read_only=read_only,
        )
        absl = logging.getLogger("absl")  # a reader (report, score) opens a manager per LM: its
        level = absl.level                # "Given directory is read only" warnings said nothing
        absl.setLevel(logging.ERROR if read_only else level)
        try:
            self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "extra"))
        finally:
            absl.setLevel(level)
        self.warnings: list[str] = []  # checkpoints that could not be restored and were set aside
        self._pending: int | None = None  # the step of the last save, until `check` saw it on disk

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, extra: dict) -> None:
        """Saves arrays ``state`` and a JSON-serialisable ``extra`` dict at ``step`` (async); an
        earlier save that failed in the background is raised here (`check`). ``extra`` is copied
        now: the writer serialises it later, while the caller goes on changing its own lists."""
        self.check()
        extra = json.loads(json.dumps(extra))
        self._check_space(state)
        with self._failure("saving"):
            self.manager.save(
                step,
                args=ocp.args.Composite(state=ocp.args.StandardSave(state), extra=ocp.args.JsonSave(extra)),
            )
        self._pending = step

    def _check_space(self, state: Any) -> None:
        """`UserError` before a save that cannot fit: a full disk found by the async writer would
        stop the run all the same, but with one traceback per array written."""
        need = sum(int(getattr(x, "nbytes", 0)) for x in jax.tree.leaves(state)) + (1 << 20)
        try:
            free = shutil.disk_usage(self.directory).free
        except OSError:
            return  # not a local folder: the writer reports failures
        if free < need:
            raise UserError(f"checkpoint folder {self.directory} has {free / 2**20:.1f} MiB free, and a checkpoint "
                            f"takes up to {need / 2**20:.1f} MiB: free space and rerun (the checkpoints finished "
                            "before are kept, and a rerun resumes from the latest)")

    def check(self) -> None:
        """`UserError` naming the folder if a background save has failed (cheap: called every step).

        Orbax's manager consumes the writer's error in its own finalising thread and raises it only
        from ``wait_until_finished`` (and still lists the step); a save that is no longer in
        progress and whose step folder was never renamed into place has failed, so that is waited
        on here, which raises it."""
        if self._pending is None or self.manager.is_saving_in_progress():
            return
        step, self._pending = self._pending, None
        if not (self.directory / str(step)).is_dir():
            self.wait()  # raises the writer's error as a UserError (or, on another process, waits for the rename)
            if (self.directory / str(step)).is_dir():
                return
            raise UserError(f"the checkpoint of step {step} was not written to {self.directory}; the run stopped "
                            "(the checkpoints finished before are kept)")

    @contextmanager
    def _failure(self, doing: str):
        try:
            yield
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - orbax and tensorstore raise many kinds; all mean the same here
            raise UserError(f"{doing} a checkpoint in {self.directory} failed: {_first_line(e)}; the run stopped "
                            "(the checkpoints finished before are kept: free space or fix the folder, then rerun "
                            "to resume)") from None

    def _restore_step(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
        out = self.manager.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), extra=ocp.args.JsonRestore()),
        )
        return out["state"], out["extra"]

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
        """One given step, restored onto ``abstract_state``; `UserError` naming the folder if it cannot be."""
        try:
            return self._restore_step(step, abstract_state)
        except Exception as e:  # noqa: BLE001 - any failure here is this folder's
            raise UserError(f"checkpoint {self.directory / str(step)} cannot be restored ({type(e).__name__}: "
                            f"{_first_line(e)}): it does not match this run's model, or is damaged") from None

    def restore_latest(self, abstract_state: Any) -> tuple[int, Any, dict] | None:
        """The latest checkpoint that restores onto ``abstract_state`` (ShapeDtypeStructs with
        shardings), as ``(step, arrays, extra)``; None if there is none.

        A step that fails to restore (a truncated or missing file, unreadable metadata) is set
        aside as ``N.corrupt`` with a warning (`warnings`) and the previous step is tried (with
        several processes: a `UserError` saying which step to move aside, as they cannot agree on
        it here). When every step fails, the checkpoints do not belong to this model or optimiser
        (or are all damaged): `UserError` naming the latest folder and its error, and nothing is
        moved. Out of memory or a device error while restoring is an error, never a fallback.
        """
        steps = sorted(self.manager.all_steps(), reverse=True)
        failed: list[tuple[int, Exception]] = []
        for step in steps:
            try:
                state, extra = self._restore_step(step, abstract_state)
            except (MemoryError, RuntimeError) as e:  # out of memory, a device error: not the files' fault
                raise UserError(f"restoring checkpoint {self.directory / str(step)} failed ({type(e).__name__}: "
                                f"{_first_line(e)}); it was left as it is") from None
            except Exception as e:  # noqa: BLE001 - see the docstring
                failed.append((step, e))
                continue
            if failed and jax.process_count() > 1:
                # every process must agree on the step and on what is set aside; without a
                # barrier here, stop loudly rather than resume processes from different steps
                bad = self.directory / str(failed[0][0])
                raise UserError(f"checkpoint {bad} cannot be restored ({_culprit(bad, failed[0][1])}"
                                f"{_first_line(failed[0][1])}); with {jax.process_count()} processes it is not set "
                                f"aside automatically: move it (mv {bad} {bad}.corrupt) and start again to resume "
                                f"from step {step}")
            if failed and jax.process_index() == 0:
                for bad, err in failed:
                    culprit = _culprit(self.directory / str(bad), err)
                    dest = set_aside(self.directory / str(bad))
                    self.warnings.append(f"checkpoint {self.directory / str(bad)} could not be restored "
                                         f"({culprit}{_first_line(err)}); set aside as {dest.name}, resumed from "
                                         f"step {step}")
                self.manager.reload()
            return step, state, extra
        if failed:
            step, e = failed[0]
            raise UserError(
                f"checkpoint {self.directory / str(step)} cannot be restored ({_culprit(self.directory / str(step), e)}"
                f"{type(e).__name__}: {_first_line(e)})"
                + (f", nor can the {len(failed) - 1} before it" if len(failed) > 1 else "")
                + ": it does not match this run's model or optimiser, or is damaged; start a new run_dir or restore "
                "the config it was saved with"
            )
        return None

    def wait(self) -> None:
        with self._failure("saving"):
            self.manager.wait_until_finished()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self.manager.close()


def _culprit(step_dir: Path, e: BaseException) -> str:
    """``"file F: "`` naming the damaged file of a step when the error does not (orbax's JSON
    metadata files that do not parse); ``""`` when the error names it or none is found."""
    named = re.findall(re.escape(str(step_dir)) + r"/[^\s\"',)]+", str(e))
    if named:  # tensorstore names the file (or the array store) it could not read, deep in its message
        path = max(named, key=len)
        return f"in {path}: " if path.endswith("/") or Path(path).is_dir() else f"file {path}: "
    for path in sorted(step_dir.rglob("*")):
        if not path.is_file() or path.suffix not in ("", ".json") or "d" in path.relative_to(step_dir).parts[:-1]:
            continue
        if path.name in ("manifest.ocdbt",) or path.stat().st_size > 1 << 22:
            continue
        try:
            json.loads(path.read_bytes())
        except (OSError, ValueError):
            return f"file {path}: "
    return ""


def _first_line(e: BaseException, limit: int = 400) -> str:
    text = " ".join(str(e).split()).split(" See full TensorStore details")[0]
    return text[:limit] + ("..." if len(text) > limit else "")


def abstract_like(tree: Any) -> Any:
    """ShapeDtypeStructs (with shardings) of a pytree of arrays."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)
