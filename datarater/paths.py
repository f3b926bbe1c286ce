"""Where the project's config tree lives."""

from __future__ import annotations

import os
from pathlib import Path

from datarater.errors import UserError


def conf_dir() -> Path:
    """The Hydra config tree: ``$DATARATER_CONF_DIR`` if set, else ``conf/`` beside the package."""
    env = os.environ.get("DATARATER_CONF_DIR")
    path = Path(env) if env else Path(__file__).resolve().parent.parent / "conf"
    if not (path / "model").is_dir():
        raise UserError(
            f"config tree not found at {path}: install the project with `pip install -e .` from its "
            "checkout, or set DATARATER_CONF_DIR to its conf/ folder"
        )
    return path
