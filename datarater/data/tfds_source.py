"""Read a prepared TFDS dataset; a named embedded corpus is built first when it is not on disk.

The build is the one slow, one-time step: `iter_tfds` reports it through ``on_build(message)``
(a program passes `datarater.console.say`) or, without one, this module's logger at INFO.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from datarater.config import CorpusConfig
from datarater.data.documents import ReadStats
from datarater.data.embedded.naming import (
    DATA_DIR_ENV,
    default_data_dir,
    is_built,
    is_embedded_name,
    parse_embedded_name,
)
from datarater.data.records import Item, use_record
from datarater.errors import UserError

logger = logging.getLogger(__name__)

_TFDS_BATCH_ROWS = 256


def iter_tfds(cfg: CorpusConfig, stats: ReadStats, on_build: Callable[[str], None] | None = None) -> Iterator[Item]:
    """The documents of split ``cfg.tfds_split`` of ``cfg.tfds_name``, in the dataset's order.

    An embedded corpus name (``datarater_embedded/...``) not built yet is built first, and
    ``on_build`` (default: the logger) gets one line saying what was built, where, in how long.
    """
    cfg, source = open_tfds(cfg, on_build)
    for _, item in iter_tfds_range(source, cfg, stats, 0, len(source)):
        yield item


def open_tfds(cfg: CorpusConfig, on_build: Callable[[str], None] | None = None) -> tuple[CorpusConfig, Any]:
    """``(config to read it with, random-access data source)`` of the corpus's TFDS split,
    building a named embedded corpus first; `UserError` if it cannot be read or lacks the text field."""
    if is_embedded_name(cfg.tfds_name):
        cfg = _prepare_embedded(cfg, on_build or logger.info)
    source = _open_tfds(cfg)
    features = list(source.dataset_info.features.keys())
    if cfg.text_field not in features:
        raise UserError(
            f"TFDS dataset '{cfg.tfds_name}' has no feature '{cfg.text_field}'; features: {features}; "
            "set corpus.text_field=<one of them>"
        )
    return cfg, source


def iter_tfds_range(source: Any, cfg: CorpusConfig, stats: ReadStats, start: int, stop: int) -> Iterator[tuple[int, Item]]:
    """``(index + 1, item)`` of the records ``[start, stop)`` of an opened source (random access)."""
    name = cfg.tfds_name
    for a in range(start, stop, _TFDS_BATCH_ROWS):
        indices = list(range(a, min(a + _TFDS_BATCH_ROWS, stop)))
        for index, record in zip(indices, source.__getitems__(indices), strict=True):
            where = f"tfds:{name}:{cfg.tfds_split}:{index}"
            item = use_record(record, cfg, stats, where, f"{name}:{cfg.tfds_split}:{index}", name)
            if item is not None:
                yield index + 1, item


def _open_tfds(cfg: CorpusConfig) -> Any:
    import tensorflow_datasets as tfds

    data_dir = os.path.expanduser(cfg.tfds_data_dir) if cfg.tfds_data_dir else None
    try:
        return tfds.data_source(cfg.tfds_name, split=cfg.tfds_split, data_dir=data_dir, download=False)
    except Exception as e:  # TFDS raises many types here; all mean "this dataset cannot be read"
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"TFDS dataset '{cfg.tfds_name}' split '{cfg.tfds_split}' cannot be read from "
            f"data_dir={data_dir or '(TFDS default, ~/tensorflow_datasets)'}: {first_line}. "
            "Prepare it with file_format='array_record' (TensorFlow is not installed) and set "
            "corpus.tfds_name / corpus.tfds_data_dir / corpus.tfds_split."
        ) from None


def _prepare_embedded(cfg: CorpusConfig, on_build: Callable[[str], None]) -> CorpusConfig:
    """The config to read the embedded corpus named by ``cfg.tfds_name``, built first if needed
    (then ``on_build`` is told so).

    Its data dir is ``cfg.tfds_data_dir``, else ``$DATARATER_DATA_DIR`` or ``~/.cache/datarater/tfds``.
    """
    try:
        spec = parse_embedded_name(cfg.tfds_name)
    except ValueError as e:
        raise UserError(f"config key 'corpus.tfds_name': {e}") from None
    data_dir = Path(os.path.expanduser(cfg.tfds_data_dir)) if cfg.tfds_data_dir else default_data_dir()
    if not is_built(data_dir, spec):
        from datarater.data.embedded.builder import build_embedded

        start = time.perf_counter()
        try:
            build_embedded(data_dir, spec.seed, spec.corrupt_fraction, spec.max_documents, spec.mix)
        except OSError as e:
            raise UserError(
                f"cannot build the embedded corpus in {data_dir} ({e}); set corpus.tfds_data_dir or "
                f"{DATA_DIR_ENV} to a writable directory"
            ) from None
        on_build(f"built the embedded corpus {spec.tfds_name} in {time.perf_counter() - start:.1f} s at {data_dir}")
    return replace(cfg, tfds_name=spec.tfds_name, tfds_data_dir=str(data_dir))
