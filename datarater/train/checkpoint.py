"""Orbax checkpoints of a training state (arrays) plus JSON side items (data iterator, step).

One ``CheckpointManager`` per run directory, saving asynchronously; a run started again in the
same directory restores the latest finished checkpoint. Arrays are restored onto the shardings
of an abstract target, so a run may resume on a different device count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from datarater.errors import UserError


class Checkpointer:
    def __init__(self, directory: Path, keep: int):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            save_interval_steps=1,  # the caller decides when to save
            create=True,
            enable_async_checkpointing=True,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "extra"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, extra: dict) -> None:
        """Saves arrays ``state`` and a JSON-serialisable ``extra`` dict at ``step`` (async)."""
        self.manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), extra=ocp.args.JsonSave(extra)),
        )

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
        """Restores onto ``abstract_state`` (ShapeDtypeStructs with shardings)."""
        try:
            out = self.manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state), extra=ocp.args.JsonRestore()
                ),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(
                f"checkpoint {self.directory}/{step} does not match this run's model or optimiser "
                f"({type(e).__name__}: {str(e)[:300]}); start a new run_dir or restore the config it was saved with"
            ) from e
        return out["state"], out["extra"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_like(tree: Any) -> Any:
    """ShapeDtypeStructs (with shardings) of a pytree of arrays."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)
