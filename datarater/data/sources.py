"""Yield a corpus's documents, from local files or a TFDS dataset as ``corpus.kind`` says.

Every user mistake ends in a `UserError` naming the file (and line) or in a counted skip in
`ReadStats`, never in a bare traceback. The readers: `files` (JSON Lines, gzip, Parquet, plain
text, via `readers`) and `tfds_source` (a prepared TFDS dataset or the embedded corpus).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from datarater.config import CorpusConfig
from datarater.data.documents import Document, ReadStats
from datarater.data.files import iter_files
from datarater.data.tfds_source import iter_tfds
from datarater.errors import UserError


def iter_documents(
    cfg: CorpusConfig, stats: ReadStats, on_build: Callable[[str], None] | None = None
) -> Iterator[Document]:
    """Yield the corpus's documents in a deterministic order, counting everything in ``stats``.

    ``cfg.kind`` "files" reads every file matched by ``cfg.paths`` (sorted, deduplicated);
    "tfds" reads split ``cfg.tfds_split`` of the prepared TFDS dataset ``cfg.tfds_name``, building
    the embedded corpus first when it names one not built yet: ``on_build`` gets the line saying
    so (a program passes `datarater.console.say`; without it the line goes to the logger).
    Stops after ``cfg.max_documents`` documents when that is > 0.
    """
    if cfg.kind == "files":
        items = iter_files(cfg, stats)
    elif cfg.kind == "tfds":
        items = iter_tfds(cfg, stats, on_build)
    else:
        raise UserError(f"config key 'corpus.kind': must be 'files' or 'tfds', got '{cfg.kind}'")
    n_used = 0
    for doc, replaced in items:
        stats.used += 1
        stats.utf8_replaced += int(replaced)
        n_used += 1
        yield doc
        if 0 < cfg.max_documents <= n_used:
            return
