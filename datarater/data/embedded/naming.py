"""Names of the embedded corpus's TFDS configs, and where it is kept. No TFDS import here.

A config name carries everything the corpus depends on besides the installed versions:
``seed0_corrupt30_docs4000`` is seed 0, 30% of documents corrupted, at most 4000 documents
(``corrupt33p3`` is 33.3%). The TFDS name is ``datarater_embedded/<config>:<version>``;
``datarater_embedded`` alone means the default config.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

DATASET_NAME = "datarater_embedded"
VERSION = "1.0.0"
DEFAULT_SEED = 0
DEFAULT_CORRUPT_FRACTION = 0.3
DEFAULT_MAX_DOCUMENTS = 4000
DATA_DIR_ENV = "DATARATER_DATA_DIR"
_CONFIG = re.compile(r"seed(?P<seed>\d+)_corrupt(?P<pct>\d+(?:p\d+)?)_docs(?P<docs>\d+)(?:_(?P<mix>[a-z]+))?")
# Which corruption types a build spreads its corrupted documents over (`corrupt.MIXES`); the
# config name carries the mix unless it is "paper" (the paper's nine categories of junk).
MIXES = ("paper", "wide")


@dataclass(frozen=True)
class EmbeddedSpec:
    """What one build of the embedded corpus is made with."""

    seed: int = DEFAULT_SEED
    corrupt_fraction: float = DEFAULT_CORRUPT_FRACTION
    max_documents: int = DEFAULT_MAX_DOCUMENTS
    mix: str = "paper"

    def __post_init__(self) -> None:
        if self.mix not in MIXES:
            raise ValueError(f"mix must be one of {', '.join(MIXES)}, got {self.mix!r}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if not 0.0 <= self.corrupt_fraction <= 1.0:
            raise ValueError(f"corrupt_fraction must be in [0, 1], got {self.corrupt_fraction}")
        if self.max_documents < 1:
            raise ValueError(f"max_documents must be >= 1, got {self.max_documents}")

    @property
    def config_name(self) -> str:
        pct = f"{round(self.corrupt_fraction * 100, 4):g}".replace(".", "p")
        mix = "" if self.mix == "paper" else f"_{self.mix}"
        return f"seed{self.seed}_corrupt{pct}_docs{self.max_documents}{mix}"

    @property
    def tfds_name(self) -> str:
        return f"{DATASET_NAME}/{self.config_name}:{VERSION}"


def is_embedded_name(tfds_name: str) -> bool:
    """Whether a TFDS name refers to the embedded corpus (with or without config and version)."""
    return (
        tfds_name == DATASET_NAME
        or tfds_name.startswith(DATASET_NAME + "/")
        or tfds_name.startswith(DATASET_NAME + ":")
    )


def parse_embedded_name(tfds_name: str) -> EmbeddedSpec:
    """The spec named by ``datarater_embedded[/<config>][:<version>]``; ValueError if malformed."""
    if not is_embedded_name(tfds_name):
        raise ValueError(f"'{tfds_name}' is not a {DATASET_NAME} name")
    rest = tfds_name[len(DATASET_NAME) :]
    rest, _, version = rest.partition(":")
    if version and version != VERSION:
        raise ValueError(f"'{tfds_name}': version {version} is not available; this code builds {VERSION}")
    config = rest.lstrip("/")
    if not config:
        return EmbeddedSpec()
    match = _CONFIG.fullmatch(config)
    if not match:
        raise ValueError(
            f"'{tfds_name}': config must look like seed<S>_corrupt<PERCENT>_docs<N>[_<mix>], e.g. "
            f"{EmbeddedSpec().tfds_name}"
        )
    pct = float(match["pct"].replace("p", "."))
    mix = match["mix"] or "paper"
    if mix not in MIXES:
        raise ValueError(f"'{tfds_name}': unknown corruption mix '{mix}'; available: {', '.join(MIXES)}")
    return EmbeddedSpec(int(match["seed"]), round(pct / 100, 6), int(match["docs"]), mix)


def default_data_dir() -> Path:
    """``$DATARATER_DATA_DIR`` or ``~/.cache/datarater/tfds``."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(os.path.expanduser(env)) if env else Path.home() / ".cache" / "datarater" / "tfds"


def prepared_dir(data_dir: str | os.PathLike, spec: EmbeddedSpec) -> Path:
    """Directory TFDS writes a prepared build to."""
    return Path(data_dir) / DATASET_NAME / spec.config_name / VERSION


def is_built(data_dir: str | os.PathLike, spec: EmbeddedSpec) -> bool:
    """Whether the build ``spec`` is prepared in ``data_dir`` (TFDS writes dataset_info.json last)."""
    return (prepared_dir(data_dir, spec) / "dataset_info.json").is_file()
