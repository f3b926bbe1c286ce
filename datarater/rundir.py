"""Run directories: one per run, holding the resolved config, metrics, checkpoints and outputs.

Starting a program again in an existing run directory resumes it, provided the config is the
same apart from keys that may change between attempts (for example the number of steps).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
from omegaconf import OmegaConf

from datarater.errors import UserError

CONFIG_FILE = "config.yaml"


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def has_checkpoint(path: Path) -> bool:
    ckpts = path / "checkpoints"
    return ckpts.is_dir() and any(p.name.isdigit() for p in ckpts.iterdir())


def _may_change(key: str, may_change: tuple[str, ...]) -> bool:
    return any(key == m or (m.endswith(".") and key.startswith(m)) for m in may_change)


def prepare_run_dir(run_dir: str | Path, config: Any, may_change: tuple[str, ...] = ()) -> tuple[Path, bool]:
    """Creates ``run_dir`` and writes ``config.yaml``; returns ``(path, resuming)``.

    If the directory already holds a config that differs in keys other than ``may_change`` (exact
    keys, or prefixes ending in ``.``: ``"mesh."``), the run stops with the list of differing keys
    rather than mixing two experiments. A key the saved config lacks (added to the program since)
    counts as its default, which is what that run used.
    """
    path = Path(run_dir).expanduser().absolute()
    new = OmegaConf.to_container(OmegaConf.structured(config), resolve=True)
    cfg_file = path / CONFIG_FILE
    # Only a run that got as far as a checkpoint is protected: a start that failed on bad input
    # can be corrected and run again in the same directory.
    resuming = cfg_file.exists() and has_checkpoint(path)
    if resuming:
        old = OmegaConf.to_container(OmegaConf.load(cfg_file), resolve=True)
        defaults = _flatten(OmegaConf.to_container(OmegaConf.structured(type(config)), resolve=True))
        a, b = _flatten(old), _flatten(new)
        a = {**{k: defaults[k] for k in b if k not in a and k in defaults}, **a}
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and not _may_change(k, may_change))
        if diff:
            shown = ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in diff[:8])
            raise UserError(
                f"run_dir {path} holds a run with a different config ({shown}{', ...' if len(diff) > 8 else ''}); "
                "use a new run_dir, or the same settings to resume it"
            )
    if jax.process_index() == 0:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"run_dir {path} cannot be created: {e.strerror}") from None
        cfg_file.write_text(OmegaConf.to_yaml(OmegaConf.create(new)))
    return path, resuming
