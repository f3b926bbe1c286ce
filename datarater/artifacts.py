"""Saved artifacts of a run directory: file names, typed configs, and the rater's parameters.

The one place that knows how a finished run is laid out on disk, used both by the programs
that write runs and by the library that reads them (curators load a rater or a reference LM,
evaluation loads an LM). Building a module from what is read is the caller's job (``models``).

    RUN/config.yaml      the resolved program config (`datarater.rundir`)
    RUN/checkpoints/     orbax checkpoints of the training state (`datarater.train.checkpoint`)
    RUN/rater/           a finished meta-training run's rater parameters
    RUN/rater.json       what produced them (meta-train step, config digest, digest of RUN/rater/)
    RUN/scores/          a `datarater score` run's side files (`datarater.curate.sidefiles`)
    RUN/summary.json     what the finished run reports
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import OmegaConf

from datarater.errors import UserError
from datarater.rundir import CONFIG_FILE, load_config_file, write_text_atomic

CHECKPOINT_DIR = "checkpoints"
RATER_DIR = "rater"
RATER_INFO_FILE = "rater.json"  # what saved RUN/rater/: program, meta-step, digest of its files
SCORE_DIR = "scores"  # `datarater score` side files
SUMMARY_FILE = "summary.json"
TARGET_FILE = "target.json"  # meta-train: the resolved target of the outer loss

T = TypeVar("T")


def json_safe(v: Any) -> Any:
    """``v`` with every NaN and inf as None, inside dicts, lists and tuples too: JSON has neither, and a
    run's JSON files (an eval's results, a probe's rows with each draw's delta) must parse anywhere."""
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def read_run_config(run_dir: str | Path, schema: type[T], what: str) -> T:
    """``RUN/config.yaml`` merged into the dataclass ``schema`` (``what`` names the run kind in errors)."""
    path = Path(run_dir).expanduser()
    cfg_file = path / CONFIG_FILE
    if not cfg_file.exists():
        raise UserError(f"{path} is not a {what} run directory (no {CONFIG_FILE})")
    raw = load_config_file(cfg_file)
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), raw))
    except Exception as e:  # noqa: BLE001 - any schema mismatch is the user's run directory
        raise UserError(f"{cfg_file} is not a {what} config: {str(e).splitlines()[0]}") from None


def read_run_section(run_dir: str | Path, key: str, schema: type[T]) -> T:
    """One section (``rater``, ``model``, ...) of ``RUN/config.yaml`` as the dataclass ``schema``."""
    raw = load_config_file(Path(run_dir) / CONFIG_FILE)
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), raw[key]))


def read_meta_target(run_dir: str | Path):
    """The ``meta.target`` a meta-train run was given (a `TargetConfig`; the default for runs
    made before targets existed)."""
    from datarater.config.groups import TargetConfig

    raw = load_config_file(Path(run_dir) / CONFIG_FILE)
    section = OmegaConf.select(raw, "meta.target")
    base = OmegaConf.structured(TargetConfig)
    return OmegaConf.to_object(base if section is None else OmegaConf.merge(base, section))


def has_rater(run_dir: str | Path) -> bool:
    path = Path(run_dir)
    return (path / CONFIG_FILE).exists() and (path / RATER_DIR).is_dir()


def tree_digest(root: Path) -> str:
    """BLAKE2b (16 bytes, hex) over every file under ``root``: relative path, size and content."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode() + b"\x00" + path.stat().st_size.to_bytes(8, "little"))
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def params_digest(tree: Any) -> str:
    """BLAKE2b (16 bytes, hex) over a pytree of arrays: each leaf's path, dtype, shape and bytes."""
    import hashlib

    import jax
    import numpy as np

    h = hashlib.blake2b(digest_size=16)
    for path, leaf in sorted(jax.tree_util.tree_flatten_with_path(tree)[0], key=lambda kv: jax.tree_util.keystr(kv[0])):
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{jax.tree_util.keystr(path)}|{a.dtype.str}|{a.shape}".encode() + b"\x00" + a.tobytes())
    return h.hexdigest()


def save_rater(run_dir: str | Path, params: Any, info: dict | None = None) -> None:
    """The rater's parameters (a pytree of arrays on every process) in ``RUN/rater/``, then
    ``RUN/rater.json``: ``info`` (what produced them) and the digest of the files written."""
    import json

    import jax
    import orbax.checkpoint as ocp

    target = (Path(run_dir) / RATER_DIR).absolute()
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(target, params, force=True)
    if jax.process_index() == 0:
        # the parameters' digest names the rater (two saves of equal parameters agree; orbax's own
        # files carry timestamps); the files' digest says the record is still of what is on disk
        record = {**(info or {}), "digest": params_digest(params), "files_digest": tree_digest(target)}
        write_text_atomic(Path(run_dir) / RATER_INFO_FILE, json.dumps(record, indent=2) + "\n")


def restore_rater(run_dir: str | Path, target: Any) -> Any:
    """The parameters saved by `save_rater`, restored onto ``target`` (ShapeDtypeStructs)."""
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore((Path(run_dir) / RATER_DIR).absolute(), target)
