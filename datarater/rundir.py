"""Run directories: one per run, holding the resolved config, metrics, checkpoints and outputs.

Starting a program again in an existing run directory resumes it, provided the config is the
same apart from keys that may change between attempts (for example the number of steps).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
from omegaconf import DictConfig, OmegaConf

from datarater.errors import UserError

CONFIG_FILE = "config.yaml"


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def _literal(value: Any) -> Any:
    """``value`` with every ``${`` escaped, so OmegaConf reads it as text, never as an interpolation."""
    if isinstance(value, dict):
        return {k: _literal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_literal(v) for v in value]
    if isinstance(value, str) and "${" in value:
        return value.replace("\\${", "${").replace("${", "\\${")
    return value


def load_config_file(path: str | Path) -> DictConfig:
    """A run directory's ``config.yaml``, as written: it was resolved when the run started, so a
    ``${...}`` in it is text (``${oc.env:...}`` is not looked up in this process's environment)."""
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise UserError(f"{path} cannot be read as a config: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path} is not a config (not a mapping of keys)")
    return OmegaConf.create(_literal(raw))


def normal_path(path: str | Path) -> Path:
    """An absolute path with ``.``, ``..`` and repeated separators folded (``/a/./b`` is ``/a/b``);
    a ``file://`` URL is its path. Any other URL stops here (`datarater.remote.staged` turns the
    run directories of train-lm and meta-train into local staging folders before this)."""
    from datarater.remote import is_url, local_path

    if is_url(path):
        raise UserError(f"'{path}': this program takes a local run directory (train-lm and meta-train take "
                        "fsspec URLs such as gs://bucket/run); give a local path or mount the bucket")
    path = local_path(path)
    return Path(os.path.normpath(Path(path).expanduser().absolute()))


def checkpoint_steps(path: Path) -> list[int]:
    """The steps of the finished checkpoints of the run in ``path``, ascending (a save under way or
    cut short has a folder name that is not a number)."""
    ckpts = path / "checkpoints"
    return sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit()) if ckpts.is_dir() else []


def has_checkpoint(path: Path) -> bool:
    return bool(checkpoint_steps(path))


def _may_change(key: str, may_change: tuple[str, ...]) -> bool:
    return any(key == m or (m.endswith(".") and key.startswith(m)) for m in may_change)


def prepare_run_dir(run_dir: str | Path, config: Any, may_change: tuple[str, ...] = (),
                    write: bool = True, recorded_as: str | None = None) -> tuple[Path, bool]:
    """Creates ``run_dir`` and writes ``config.yaml`` (``write=False``: the caller does, with
    `save_config`, once its own checks pass); returns ``(path, resuming)``. Its ``run_dir`` is
    ``recorded_as`` when given (the URL a local staging folder mirrors), else the normalised path.

    If the directory already holds a config that differs in keys other than ``may_change`` (exact
    keys, or prefixes ending in ``.``: ``"mesh."``), the run stops with the list of differing keys
    rather than mixing two experiments. A key the saved config lacks (added to the program since)
    counts as its default, which is what that run used.
    """
    path = normal_path(run_dir)
    new = run_config(config, recorded_as or path)
    cfg_file = path / CONFIG_FILE
    # Only a run that got as far as a checkpoint is protected: a start that failed on bad input
    # can be corrected and run again in the same directory.
    resuming = cfg_file.exists() and has_checkpoint(path)
    if resuming:
        old = OmegaConf.to_container(load_config_file(cfg_file), resolve=True)
        defaults = _flatten(OmegaConf.to_container(OmegaConf.structured(type(config)), resolve=True))
        a, b = _flatten(old), _flatten(new)
        a = {**{k: defaults[k] for k in b if k not in a and k in defaults}, **a}
        # run_dir is where the run is, not what it is: a directory moved, or named another way, resumes
        diff = sorted(k for k in set(a) | set(b)
                      if a.get(k) != b.get(k) and k != "run_dir" and not _may_change(k, may_change))
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
    if write:
        save_config(path, config, recorded_as)
    return path, resuming


def save_config(path: Path, config: Any, recorded_as: str | None = None) -> None:
    """Writes ``RUN/config.yaml`` (process 0, atomically). `prepare_run_dir` does it unless told not
    to: a program that first checks what the run directory holds (`datarater score`) writes it
    once those checks pass, so a refused rerun leaves the config of what is there."""
    if jax.process_index() != 0:
        return
    write_text_atomic(path / CONFIG_FILE, OmegaConf.to_yaml(OmegaConf.create(run_config(config, recorded_as or path))))


def write_text_atomic(path: Path, text: str) -> Path:
    """Writes ``text`` to a temporary file beside ``path``, then renames it: ``path`` is whole or absent."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def config_digest(run_dir: str | Path) -> str | None:
    """BLAKE2b (8 bytes, hex) of a run directory's ``config.yaml`` as written: which settings made a result."""
    import hashlib

    path = Path(run_dir) / CONFIG_FILE
    return hashlib.blake2b(path.read_bytes(), digest_size=8).hexdigest() if path.exists() else None


def run_config(config: Any, path: Path | str | None = None) -> dict[str, Any]:
    """A program config as the plain resolved dict that ``config.yaml`` holds, its ``run_dir``
    the normalised ``path`` when given (also what the trackers record)."""
    out = OmegaConf.to_container(OmegaConf.structured(config), resolve=True)
    if path is not None and "run_dir" in out:
        out["run_dir"] = str(path)
    return out
