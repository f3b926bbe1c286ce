"""Score side files: sharded parquet ``{id, source, score}`` beside (never inside) the corpus.

Layout of a score directory (``RUN_DIR/scores/``)::

    scores-00000-of-00003.parquet   rows [0, shard_size), in corpus order
    ...
    meta.json                       curator, unit, split, rows, shards, fingerprints

``unit=sequence`` rows are packed sequences (id ``train-00000012``) with a ``doc_ids`` list
column naming the documents in each; ``unit=document`` rows are documents (id = document id)
with a ``chunks`` column (sequence-length chunks averaged). Each shard carries the fingerprint
of its corpus rows (BLAKE2b over ids and token bytes) in its parquet metadata, so scores of a
different corpus, tokenizer or packing are refused rather than silently misaligned.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from datarater.artifacts import SCORE_DIR
from datarater.errors import UserError
from datarater.rundir import write_text_atomic

META_FILE = "meta.json"
_FINGERPRINT_KEY = b"datarater.fingerprint"
_PRODUCER_KEY = b"datarater.producer"  # JSON: `datarater.curate.provenance.producer`


def shard_name(index: int, count: int) -> str:
    return f"scores-{index:05d}-of-{count:05d}.parquet"


def num_shards(num_rows: int, shard_size: int) -> int:
    return max(1, -(-num_rows // shard_size))


def shard_bounds(index: int, num_rows: int, shard_size: int) -> tuple[int, int]:
    return index * shard_size, min((index + 1) * shard_size, num_rows)


def fingerprint_rows(ids: Sequence[str], tokens: Sequence[np.ndarray]) -> str:
    """BLAKE2b over each row's id and int32 token bytes, in order."""
    h = hashlib.blake2b(digest_size=16)
    for row_id, toks in zip(ids, tokens, strict=True):
        h.update(str(row_id).encode("utf-8", "surrogatepass") + b"\x00")
        t = np.ascontiguousarray(np.asarray(toks, dtype="<i4"))
        h.update(len(t).to_bytes(8, "little") + t.tobytes())
    return h.hexdigest()


def shard_fingerprints(ids: Sequence[str], tokens: Sequence[np.ndarray], shard_size: int) -> list[str]:
    """`fingerprint_rows` of each shard of ``shard_size`` rows."""
    n = len(ids)
    return [
        fingerprint_rows(ids[a:b], tokens[a:b])
        for a, b in (shard_bounds(i, n, shard_size) for i in range(num_shards(n, shard_size)))
    ]


def combined_fingerprint(fingerprints: Sequence[str]) -> str:
    return hashlib.blake2b("".join(fingerprints).encode(), digest_size=16).hexdigest()


def write_shard(
    path: str | Path,
    ids: Sequence[str],
    sources: Sequence[str],
    scores: np.ndarray,
    fingerprint: str,
    doc_ids: Sequence[Sequence[str]] | None = None,
    chunks: Sequence[int] | None = None,
    producer: dict[str, Any] | None = None,
) -> Path:
    """Writes one shard atomically (temporary file, then rename): a shard on disk is complete."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    columns: dict[str, Any] = {
        "id": pa.array([str(i) for i in ids], pa.string()),
        "source": pa.array(list(sources), pa.string()),
        "score": pa.array(np.asarray(scores, dtype=np.float32), pa.float32()),
    }
    if doc_ids is not None:
        columns["doc_ids"] = pa.array([list(d) for d in doc_ids], pa.list_(pa.string()))
    if chunks is not None:
        columns["chunks"] = pa.array(np.asarray(chunks, dtype=np.int32), pa.int32())
    lengths = {k: len(v) for k, v in columns.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"columns of unequal length: {lengths}")
    meta = {_FINGERPRINT_KEY: fingerprint.encode()}
    if producer is not None:
        meta[_PRODUCER_KEY] = json.dumps(producer, sort_keys=True).encode()
    table = pa.table(columns).replace_schema_metadata(meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def shard_fingerprint_on_disk(path: str | Path) -> str | None:
    """The fingerprint stored in a shard, or None if the file is missing or unreadable."""
    return shard_metadata_on_disk(path)[0]


def shard_metadata_on_disk(path: str | Path) -> tuple[str | None, dict[str, Any] | None]:
    """``(fingerprint, producer)`` stored in a shard; Nones if the file is missing or unreadable
    (or, for the producer, written before producers were recorded)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException):
        return None, None
    value, made = meta.get(_FINGERPRINT_KEY), meta.get(_PRODUCER_KEY)
    return (value.decode() if value else None), (json.loads(made) if made else None)


def shards_producer(score_dir: Path) -> dict[str, Any] | None:
    """The one producer of a score directory's shards (`UserError` naming two files if they are
    mixed); None for shards written before producers were recorded."""
    from datarater.curate.provenance import check_one_producer

    shards = sorted(Path(score_dir).glob("scores-*.parquet"))
    return check_one_producer([(p.name, shard_metadata_on_disk(p)[1]) for p in shards], str(score_dir))


def write_metadata(score_dir: str | Path, meta: dict[str, Any]) -> Path:
    path = Path(score_dir) / META_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, json.dumps(meta, indent=2) + "\n")


def read_metadata(score_dir: str | Path) -> dict[str, Any]:
    """The ``meta.json`` of a score directory (``RUN_DIR`` or ``RUN_DIR/scores``)."""
    d = resolve_score_dir(score_dir)
    try:
        return json.loads((d / META_FILE).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{d / META_FILE}: cannot be read ({e}); is the `datarater score` run finished?") from None


def resolve_score_dir(path: str | Path) -> Path:
    """``path/scores`` if ``path`` is a score run directory, else ``path`` itself."""
    p = Path(path).expanduser()
    if (p / SCORE_DIR / META_FILE).exists():
        return p / SCORE_DIR
    if (p / META_FILE).exists():
        return p
    raise UserError(
        f"{p} holds no scores ({META_FILE} not found in it or in {p / 'scores'}): "
        "give the run directory of a finished `datarater score` run"
    )


def read_scores(
    score_dir: str | Path,
    expect_ids: Sequence[str] | None = None,
    expect_fingerprint: str | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ids, sources, scores)`` of all shards in order; refuses scores of another corpus.

    ``expect_ids`` (the corpus's row ids, in order) and ``expect_fingerprint`` (`combined_fingerprint`
    of the corpus's shards) are each checked when given.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = resolve_score_dir(score_dir)
    meta = read_metadata(d)
    count = int(meta["num_shards"])
    ids, sources, scores, prints = [], [], [], []
    for i in range(count):
        path = d / shard_name(i, count)
        if not path.exists():
            raise UserError(f"{path} is missing: the `datarater score` run is unfinished; run it again to complete it")
        try:
            table = pq.read_table(path, columns=["id", "source", "score"])
        except (OSError, pa.ArrowException) as e:
            raise UserError(f"{path}: cannot be read as a score shard: {e}") from None
        prints.append((table.schema.metadata or {}).get(_FINGERPRINT_KEY, b"").decode())
        ids.append(np.asarray(table.column("id").to_pylist(), dtype=object))
        sources.append(np.asarray(table.column("source").to_pylist(), dtype=object))
        scores.append(table.column("score").to_numpy().astype(np.float32))
    out_ids = np.concatenate(ids) if ids else np.array([], dtype=object)
    if len(out_ids) != int(meta["num_rows"]):
        raise UserError(f"{d}: shards hold {len(out_ids)} rows but {META_FILE} says {meta['num_rows']}")
    if expect_ids is not None:
        check_ids(out_ids, expect_ids, d)
    if expect_fingerprint is not None and combined_fingerprint(prints) != expect_fingerprint:
        raise UserError(
            f"{d}: the scores were computed on different corpus rows ({meta.get('unit')} unit, split "
            f"'{meta.get('split')}'): the corpus, tokenizer, sequence length or split settings changed since "
            "`datarater score` ran; score the corpus again"
        )
    return out_ids, np.concatenate(sources) if sources else out_ids.copy(), (
        np.concatenate(scores) if scores else np.array([], np.float32)
    )


def check_ids(found: Sequence[str], expected: Sequence[str], where: str | Path) -> None:
    """Raise unless the side file's ids are the corpus's, in the same order."""
    if len(found) != len(expected):
        raise UserError(
            f"{where}: the side file has {len(found)} rows but the corpus has {len(expected)}: "
            "these scores belong to another corpus or split; score this one"
        )
    for k, (a, b) in enumerate(zip(found, expected, strict=True)):
        if str(a) != str(b):
            raise UserError(
                f"{where}: row {k} of the side file is '{a}' but the corpus has '{b}' there: "
                "these scores belong to another corpus or split; score this one"
            )


def scores_for_rows(score_dir: str | Path, ids: Sequence[str], tokens: Sequence[np.ndarray], unit: str) -> np.ndarray:
    """Scores aligned with corpus rows ``(ids, tokens)``; refuses any mismatch with a clear message.

    For packed sequences: ``scores_for_rows(dir, packed.ids, packed.tokens, "sequence")``.
    """
    d = resolve_score_dir(score_dir)
    meta = read_metadata(d)
    if meta.get("unit") != unit:
        raise UserError(f"{d}: holds scores per {meta.get('unit')}, but scores per {unit} are needed "
                        f"(run `datarater score score.unit={unit}`)")
    expected = combined_fingerprint(shard_fingerprints(ids, tokens, int(meta["shard_size"])))
    _, _, scores = read_scores(d, expect_ids=ids, expect_fingerprint=expected)
    return scores
