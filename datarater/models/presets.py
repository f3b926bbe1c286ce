"""Model presets: the YAML files in ``conf/model/`` as ``ModelConfig``s.

Parameter counts and FLOPs are `datarater.models.flops`.
"""

from __future__ import annotations

from omegaconf import OmegaConf

from datarater.config import ModelConfig
from datarater.errors import UserError
from datarater.paths import conf_dir


def preset_names() -> list[str]:
    return sorted(p.stem for p in (conf_dir() / "model").glob("*.yaml"))


def load_preset(name: str) -> ModelConfig:
    """The ``ModelConfig`` of ``conf/model/<name>.yaml``."""
    path = conf_dir() / "model" / f"{name}.yaml"
    if not path.exists():
        raise UserError(f"unknown model preset '{name}'; available: {', '.join(preset_names())}")
    merged = OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.load(path))
    return OmegaConf.to_object(merged)

