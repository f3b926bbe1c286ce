"""Model presets: the ``ModelConfig`` of each YAML file in ``conf/model/``."""

from __future__ import annotations

import re

from omegaconf import OmegaConf

from datarater.config.groups import ModelConfig
from datarater.errors import UserError
from datarater.paths import conf_dir


def preset_names() -> list[str]:
    return sorted(p.stem for p in (conf_dir() / "model").glob("*.yaml"))


def load_preset(name: str) -> ModelConfig:
    """The ``ModelConfig`` of ``conf/model/<name>.yaml``; a name is letters, digits, ``_``, ``-``
    and ``.``, never a path."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name) or ".." in name:
        raise UserError(f"model preset name {name!r} is not a preset name (letters, digits, _ . -; no paths); "
                        f"available: {', '.join(preset_names())}")
    path = conf_dir() / "model" / f"{name}.yaml"
    if not path.exists():
        raise UserError(f"unknown model preset '{name}'; available: {', '.join(preset_names())}")
    merged = OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.load(path))
    return OmegaConf.to_object(merged)
