"""Experiment trackers behind the metrics file's one interface: ``metrics.jsonl`` always, TensorBoard and Weights & Biases when asked.

`Trackers` is a `MetricsFile` (the training loop drops rows after a checkpoint and writes them
again through it) that also sends every numeric field of a row to the trackers in
``logging.trackers``, from process 0 only:

- ``tensorboard``: tensorboardX event files in ``RUN/tensorboard/``, one scalar per field at the
  row's ``step`` (a dict field, such as ``score_by_source``, as ``field/key``). The writer starts
  with ``purge_step`` at the first step it writes, so after a resume TensorBoard drops the events
  an earlier attempt wrote from there on, as this file does its rows.
- ``wandb``: a W&B run in ``RUN/wandb/`` (``logging.wandb_mode``: offline by default, synced later
  with ``wandb sync``), resumed under the id kept in ``RUN/wandb/run_id``, the resolved config as
  its config, ``step`` as the x-axis of every metric.

`log_report` sends a sweep's report (its PNG plots and its results table) to the same trackers.

A tracker that is asked for and not installed stops the run before any work with the command that
installs it.
"""

from __future__ import annotations

import math
import secrets
from numbers import Real
from pathlib import Path
from typing import Any

from datarater.config.groups import LoggingConfig
from datarater.errors import UserError
from datarater.train.metrics import MetricsFile

EXTRA = "pip install 'datarater[tracking]'"


def _scalars(row: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric fields of a row, flattened (``a/b`` for nested dicts); ``step`` left out."""
    out: dict[str, float] = {}
    for k, v in row.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_scalars(v, f"{name}/"))
        elif isinstance(v, Real) and not isinstance(v, bool) and k != "step":
            out[name] = float(v)
        elif hasattr(v, "item") and getattr(v, "ndim", None) == 0 and k != "step":
            out[name] = float(v.item())
    return out


def _need(module: str, tracker: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"config key 'logging.trackers': {tracker} needs the '{module}' package: {EXTRA}") from None


class Trackers(MetricsFile):
    """``metrics.jsonl`` plus the trackers of ``cfg`` (see the module docstring)."""

    def __init__(self, run_dir: Path, cfg: LoggingConfig, config: dict[str, Any], name: str):
        super().__init__(Path(run_dir) / "metrics.jsonl")
        self.run_dir, self.cfg, self.config, self.name = Path(run_dir), cfg, config, name
        self.wanted = [t for t in dict.fromkeys(cfg.trackers) if t != "jsonl"]
        self._tb = None
        self._wandb = None
        if self.enabled:  # fail before any work when a tracker is missing
            if "tensorboard" in self.wanted:
                _need("tensorboardX", "tensorboard")
            if "wandb" in self.wanted:
                _need("wandb", "wandb")

    def write(self, row: dict[str, Any]) -> None:
        super().write(row)
        if not self.enabled or not self.wanted or "step" not in row:
            return
        step = int(row["step"])
        values = {k: v for k, v in _scalars(row).items() if math.isfinite(v)}
        if "tensorboard" in self.wanted:
            tb = self._tensorboard(step)
            for k, v in values.items():
                tb.add_scalar(k, v, global_step=step)
        if "wandb" in self.wanted:
            self._run().log({**values, "step": step})

    def _tensorboard(self, first_step: int):
        if self._tb is None:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=first_step, flush_secs=10)
            self._tb.add_text("config", "```\n" + _yaml(self.config) + "\n```", global_step=first_step)
        return self._tb

    def _run(self):
        if self._wandb is None:
            import wandb

            folder = self.run_dir / "wandb"
            folder.mkdir(parents=True, exist_ok=True)
            id_file = folder / "run_id"
            run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(4)
            id_file.write_text(run_id + "\n")
            self._wandb = wandb.init(project=self.cfg.wandb_project, name=f"{self.name}:{self.run_dir.name}",
                                     id=run_id, resume="allow", dir=str(self.run_dir), mode=self.cfg.wandb_mode,
                                     config=self.config, settings=wandb.Settings(silent=True, console="off"))
            self._wandb.define_metric("step")
            self._wandb.define_metric("*", step_metric="step")
        return self._wandb

    def log_report(self, images: dict[str, Path], tables: dict[str, list[dict]], step: int) -> None:
        """A report's plots and tables: TensorBoard images and markdown text under ``report/``, W&B
        images and tables. Nothing is written to ``metrics.jsonl`` (the report's files hold them)."""
        if not self.enabled or not self.wanted:
            return
        if "tensorboard" in self.wanted:
            from matplotlib.image import imread

            tb = self._tensorboard(step)
            for name, path in images.items():
                tb.add_image(f"report/{name}", imread(path)[..., :3], global_step=step, dataformats="HWC")
            for name, rows in tables.items():
                tb.add_text(f"report/{name}", _markdown(rows), global_step=step)
        if "wandb" in self.wanted:
            import wandb

            logged: dict[str, Any] = {f"report/{n}": wandb.Image(str(p)) for n, p in images.items()}
            for name, rows in tables.items():
                cols = list(dict.fromkeys(k for r in rows for k in r))
                logged[f"report/{name}"] = wandb.Table(columns=cols, data=[[r.get(c) for c in cols] for r in rows])
            self._run().log({**logged, "step": step})

    def close(self) -> None:
        """Flushes and closes the trackers (the jsonl file is appended line by line: nothing to do)."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def _markdown(rows: list[dict]) -> str:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join("" if r.get(c) is None else str(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def _yaml(config: dict) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(config))
